"""The Gradio app: event handlers called directly, then the running app through gradio_client
(progress during training, two users at once, bad input).  The browser test is separate."""
import os
import socket
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from app.handlers import Studio  # noqa: E402
from mmict_core.workbench import method_label, training_free_methods  # noqa: E402
from tests.test_data import _huge_png, _png_bytes  # noqa: E402


class Req:
    """Stands in for gr.Request: only the session hash matters to the handlers."""

    def __init__(self, h):
        self.session_hash = h


class Sel:
    def __init__(self, index):
        self.index = index


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    return Studio(workdir=tmp_path_factory.mktemp("app"), pool_size=12)


def _demo_count(summary: str) -> int:
    return int(summary.split("**")[1].split()[0])


def test_sessions_are_isolated(studio):
    a, b = Req("alice"), Req("bob")
    studio.clear(a)
    gal, summary, *_ = studio.pick(Sel(3), a)
    gal, summary, *_ = studio.pick(Sel(5), a)
    assert _demo_count(summary) == 2 and gal[3][1].startswith("✓ demo 1") and gal[5][1].startswith("✓ demo 2")
    gal_b, summary_b, *_ = studio.refresh(b)
    assert _demo_count(summary_b) == 0 and not any(c.startswith("✓") for _, c in gal_b)
    studio.move_up(2, a)  # demo 2 (item 5) to the front
    assert studio.session(a).selected == [5, 3]
    # one user's trained adapter is not in the other's Compare list or library
    status = list(studio.train("hificl", "binding", 8, 2, 5e-3, 4, 0, request=a, progress=lambda *x, **k: None))
    assert "finished" in status[-1][0]
    assert studio.method_choices(a).choices[-1][0] == "hificl-binding-2s"
    assert [c[0] for c in studio.method_choices(b).choices] == [method_label(n) for n in training_free_methods()]
    own = lambda req: [r[0] for r in studio.library_list("", req)[0] if r[1] == "yours"]  # the starter library is everyone's
    assert own(b) == [] and own(a) == ["hificl-binding-2s"]


def test_compare_and_export(studio, tmp_path):
    r = Req("carol")
    studio.auto_fill("balanced", 4, 0, r)
    table, html = studio.compare(["ICL"], r)
    s = studio.session(r)
    direct = s.backbone.generate([s.episode()], max_new_tokens=3)[0]
    assert table[0][0] == "ICL" and table[0][1] == 4 and table[0][2] == direct
    assert table[0][3] == ("✓" if direct == s.query.answer else "✗")
    assert "data:image/png;base64," in html and "http" not in html
    png, page = studio.export_case(r)
    assert png.endswith(".png") and page.endswith(".html") and os.path.getsize(png) > 1000
    with pytest.raises(gr.Error, match="choose at least one"):
        studio.compare([], r)


def test_bad_input_gets_a_message(studio, tmp_path):
    r = Req("dave")
    text = tmp_path / "x.png"
    text.write_text("hello")
    huge = tmp_path / "huge.png"
    huge.write_bytes(_huge_png(20000, 20000))
    good = tmp_path / "ok.png"
    good.write_bytes(_png_bytes(np.full((32, 32, 3), 90, np.uint8)))
    with pytest.raises(gr.Error, match="unusable image"):
        studio.upload_demo(str(text), "what is this ?", "vex", r)
    with pytest.raises(gr.Error, match="too large"):
        studio.set_query(str(huge), "what is this ?", "", r)
    with pytest.raises(gr.Error, match="question is empty"):
        studio.set_query(None, "  ", "", r)
    with pytest.raises(gr.Error, match="needs its answer"):
        studio.upload_demo(str(good), "what is this ?", "", r)
    with pytest.raises(gr.Error, match="samples"):
        list(studio.train("hificl", "binding", 0, 5, 5e-3, 4, 0, request=r, progress=lambda *x, **k: None))
    with pytest.raises(gr.Error, match="virtual key/value slots"):
        studio.attention("", -1, r)
    with pytest.raises(gr.Error, match="no (library )?entry"):
        studio.library_load("ghost", r)
    # nothing the user had is lost: a good upload still works after the failures
    gal, *_ = studio.upload_demo(str(good), "what is this ?", "vex", r)
    assert gal[-1][1].startswith("upload")
    # too many demonstrations for the context: the compare row says so, the app does not fail
    s = studio.session(r)
    s.load_pool("binding", 80)
    s.selected = list(range(80))  # 80 demos x 15 tokens > the 1024-token context
    table, _ = studio.compare(["ICL"], r)
    assert "context holds" in table[0][2]


def test_attention_figures(studio):
    r = Req("erin")
    list(studio.train("hificl", "binding", 8, 2, 5e-3, 4, 0, request=r, progress=lambda *x, **k: None))
    name = studio.attention_choices(r).value
    grid, tok, slots = studio.attention(name, -1, r)
    a = studio.session(r).attention(name)
    q = [i for i, it in enumerate(a.items) if it == a.items.max()]
    np.testing.assert_allclose(np.asarray(grid.data[0].z, float), a.virtual_mass[:, :, q].mean(-1), rtol=1e-6)
    assert np.asarray(slots.data[0].z).shape == (a.slot_weights.shape[0], a.slot_weights.shape[-1])


# ---------------------------------------------------------------------------------------------
# the running app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from gradio_client import Client

    from app.main import launch

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    demo, url, studio = launch(block=False, port=_free_port(), workdir=tmp_path_factory.mktemp("served"))
    assert url.startswith("http://127.0.0.1:")  # binds localhost by default
    try:
        yield url, studio, Client
    finally:
        demo.close()


def test_client_train_reports_progress(served):
    url, studio, Client = served
    c = Client(url, verbose=False)
    try:
        job = c.submit("hificl", "binding", 16, 12, 5e-3, 4, 0, api_name="/train")
        seen = set()
        while not job.done():
            st = job.status()
            for unit in st.progress_data or []:
                if unit.desc and "step" in unit.desc:
                    seen.add(unit.desc.split("step ")[1].split(",")[0])
            time.sleep(0.05)
        outs = job.outputs()
        assert "finished: 12 steps" in outs[-1][0]
        assert len(outs) >= 2  # the loss curve streamed before the end
        assert len(seen) >= 2, f"progress updates seen: {seen}"
        table, _ = c.predict(["ICL", "hificl-binding-12s"], api_name="/compare")
        assert [row[0] for row in table["data"]] == ["ICL", "hificl-binding-12s"]
    finally:
        c.close()


def test_two_users_train_at_once(served):
    from gradio_client import handle_file

    url, studio, Client = served
    c1, c2 = Client(url, verbose=False), Client(url, verbose=False)
    try:
        j1 = c1.submit("lora", "binding", 8, 4, 5e-3, 2, 0, api_name="/train")
        j2 = c2.submit("hificl", "binding", 8, 4, 5e-3, 2, 1, api_name="/train")
        r1, r2 = j1.result(), j2.result()
        assert "lora-binding-4s" in r1[0] and "hificl-binding-4s" in r2[0]
        # each user's Compare sees only their own adapter
        assert c1.predict(api_name="/method_choices")["choices"][-1][0] == "lora-binding-4s"
        assert c2.predict(api_name="/method_choices")["choices"][-1][0] == "hificl-binding-4s"
        # bad input over the wire: a clear error, and the server keeps serving
        bad = os.path.join(os.environ["GRADIO_TEMP_DIR"], "bad.png")
        with open(bad, "w") as f:
            f.write("not an image")
        with pytest.raises(Exception, match="unusable image"):
            c1.predict(handle_file(bad), "what is this ?", "vex", api_name="/upload_demo")
        gal, summary, *_ = c1.predict("random", 3, 0, api_name="/auto_fill")
        assert "**3 demonstrations**" in summary
    finally:
        c1.close()
        c2.close()


def test_use_as_query_takes_the_item_out_of_the_gallery_demos(studio):
    r = Req("grace")
    studio.clear(r)
    studio.pick(Sel(3), r)
    gal, *_ = studio.query_from_gallery(4, r)  # Pool # counts from 1: item 3
    s = studio.session(r)
    assert s.query_item == 3 and s.selected == [] and gal[3][1].startswith("query · #4")
    with pytest.raises(gr.Error, match="is the query"):
        studio.pick(Sel(3), r)
    studio.auto_fill("random", len(s.items) - 1, 0, r)
    assert sorted(s.selected) == [i for i in range(len(s.items)) if i != 3]
