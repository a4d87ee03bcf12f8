"""A browser session's work survives a reload: the id the browser keeps (gr.BrowserState) names a
server-side store with an expiry and a quota; "Clear my session" deletes it; sessions stay apart."""
from __future__ import annotations

import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pytest  # noqa: E402

from app.handlers import Studio  # noqa: E402
from mmict_core.workbench_store import SessionStore  # noqa: E402

NOPROG = dict(progress=lambda *a, **k: None)


class Req:
    def __init__(self, h):
        self.session_hash = h


@pytest.fixture()
def studio(tmp_path):
    return Studio(workdir=tmp_path, pool_size=4)


def _train(studio, r, steps=2):
    return list(studio.train("lora", "binding", 4, steps, 5e-3, 2, 0, request=r, **NOPROG))[-1][0]


def test_reload_brings_back_the_adapters_and_sessions_stay_apart(studio):
    tab1 = Req("tab-1")
    sid = studio.attach(None, tab1)  # first visit: a fresh id for the browser to keep
    assert len(sid) == 32
    assert "lora-binding-2s" in _train(studio, tab1)
    studio.drop_session(tab1)  # the page is reloaded: the old tab goes ...
    tab2 = Req("tab-2")
    assert studio.attach(sid, tab2) == sid  # ... and the new one brings the id back
    s = studio.session(tab2)
    assert list(s.adapters) == ["lora-binding-2s"] and s.adapters["lora-binding-2s"].name == "lora"
    assert [row[0] for row in studio.library_list("", tab2)[0] if row[1] == "yours"] == ["lora-binding-2s"]
    table, _ = studio.compare(["ICL", "lora-binding-2s"], tab2)
    assert [row[0] for row in table] == ["ICL", "lora-binding-2s"]
    # the comparison's results come back after the next reload too
    studio.drop_session(tab2)
    tab3 = Req("tab-3")
    assert studio.attach(sid, tab3) == sid and studio.last_results(tab3) == table
    # another browser (no id, or a made-up one) sees nothing of it
    other = Req("someone-else")
    for guess in (None, "x" * 32, "../" + sid, sid[:-1]):
        assert studio.attach(guess, other) != sid
        assert studio.session(other).adapters == {} and [r for r in studio.library_list("", other)[0] if r[1] == "yours"] == []


def test_clear_my_session_deletes_everything(studio):
    tab = Req("clear-tab")
    sid = studio.attach(None, tab)
    _train(studio, tab)
    studio.compare(["ICL"], tab)
    assert studio.last_results(tab)
    new, msg = studio.clear_session(sid, tab)
    assert new != sid and "cleared" in msg
    assert not (studio.store.root / sid).exists()
    assert studio.session(tab).adapters == {} and [r for r in studio.library_list("", tab)[0] if r[1] == "yours"] == []
    assert studio.last_results(tab) == []
    assert studio.attach(sid, Req("later")) != sid  # the old id is gone for good
    assert "lora-binding-2s" in _train(studio, tab)  # and the session works on


def test_quota_refuses_training_with_a_message(studio):
    tab = Req("quota-tab")
    studio.attach(None, tab)
    studio.store.quota = 1  # any stored byte is over
    with pytest.raises(gr.Error, match=r"storage is full .* clear your session"):
        _train(studio, tab)
    studio.store.quota = 10 * 2**20
    assert "finished" in _train(studio, tab)


def test_store_expiry_and_ids(tmp_path):
    st = SessionStore(tmp_path, ttl_seconds=3600)
    a = st.open(None)
    b = st.open(None)
    assert a != b and st.valid(a) and st.open(a) == a
    (tmp_path / a / ".last-used").write_text(str(time.time() - 7200))  # unused for 2 h
    assert st.expire() == [a] and not (tmp_path / a).exists() and st.valid(b)
    assert st.open(a) != a  # an expired id gets a fresh session
    for bad in ("../etc", "", None, 5, "a" * 31):
        assert not st.valid(bad)
    with pytest.raises(ValueError):
        SessionStore(tmp_path, ttl_seconds=0)
