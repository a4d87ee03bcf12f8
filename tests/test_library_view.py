"""The starter library seen beside a user's own VLibrary (mmict_core.vlibrary.view.LibraryView):
every front end lists it read-only, loads its adapters bit-identically to a direct load, never
writes to it, never restores it into a session on reload, and refuses to shadow its names."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mmict_core.data import make_episode
from mmict_core.methods import create_method
from mmict_core.vlibrary import LibraryError, VLibrary
from mmict_core.vlibrary.view import OWN, SHARED, LibraryView
from mmict_core.workbench import Session, TrainRequest


def _lora(bb, seed):
    m = create_method("lora", bb, seed=seed)
    with torch.no_grad():  # a non-trivial adapter: LoRA's B starts at zero
        for p in m.trainable_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return m


@pytest.fixture(scope="module")
def starter(tmp_path_factory, vlm):
    lib = VLibrary(tmp_path_factory.mktemp("starter"))
    lib.add("binding.lora", _lora(vlm, 1), task="binding", metrics={"accuracy": 0.9})
    lib.add("shared-two", _lora(vlm, 2), task="binding")
    return lib


def test_list_marks_sources_and_filters_by_backbone(tmp_path, vlm, starter):
    own = VLibrary(tmp_path / "own")
    own.add("mine", _lora(vlm, 3), task="binding")
    view = LibraryView(own, [starter], vlm.fingerprint())
    rows = {e["name"]: e["source"] for e in view.list()}
    assert rows == {"mine": OWN, "binding.lora": SHARED, "shared-two": SHARED}
    assert [e["name"] for e in view.list()][0] == "mine"  # own first
    assert [e["name"] for e in view.list(source=OWN)] == ["mine"]
    # entries trained on another backbone are not offered at all
    assert LibraryView(own, [starter], "another-fingerprint").list(source=SHARED) == []


def test_loading_a_starter_entry_equals_a_direct_load(tmp_path, vlm, starter):
    view = LibraryView(VLibrary(tmp_path / "own"), [starter], vlm.fingerprint())
    a, b = view.load("binding.lora", vlm), starter.load("binding.lora", vlm)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    ep = make_episode("binding", 2, seed=0, index=0)
    assert a.generate([ep]) == b.generate([ep])


def test_starter_is_read_only_and_never_shadowed(tmp_path, vlm, starter):
    before = sorted(p.name for p in starter.root.iterdir())
    view = LibraryView(VLibrary(tmp_path / "own"), [starter], vlm.fingerprint())
    with pytest.raises(LibraryError, match="starter library .* read-only"):
        view.remove("binding.lora")
    with pytest.raises(LibraryError, match="read-only; choose another name"):
        view.add("binding.lora", _lora(vlm, 4), task="binding")
    with pytest.raises(LibraryError, match="one library at a time"):
        view.own.add("mine", _lora(vlm, 5), task="binding")
        view.compose(["mine", "binding.lora"], None, vlm)
    assert sorted(p.name for p in starter.root.iterdir()) == before
    # no own library: nothing can be stored, the starter is still listed
    bare = LibraryView(None, [starter], vlm.fingerprint())
    assert not bare.writable and {e["name"] for e in bare.list()} == {"binding.lora", "shared-two"}
    with pytest.raises(LibraryError, match="no library of its own"):
        bare.remove("mine")


def test_session_sees_starter_trains_beside_it_and_reload_restores_only_own(tmp_path, vlm, starter):
    s = Session(vlm, library_root=tmp_path / "own", shared_libraries=[starter], pool_size=8)
    assert set(s.library_choices()) == {"binding.lora", "shared-two"}
    s.load_from_library("binding.lora")
    assert "binding.lora" in s.method_labels() and "binding.lora" not in s.library_choices()
    with pytest.raises(LibraryError):
        s.delete("binding.lora")
    out = s.train(TrainRequest(method="lora", task="binding", samples=8, steps=2))
    own = [e["name"] for e in s.library.list(source=OWN)]
    assert own == [s.name_of(out.method)] and own[0] not in {"binding.lora", "shared-two"}


def test_widget_studio_offers_the_starter_library(vlm, starter, monkeypatch):
    from mmict_core import casestudy
    from mmict_core.widgets import Studio

    monkeypatch.setattr(casestudy, "STARTER_DIR", starter.root)
    st = Studio(Session(vlm, pool_size=8), threaded=False)
    assert set(st.comparison.library.options) == {"binding.lora", "shared-two"}
    st.comparison.library.value = "shared-two"
    assert st.comparison.load() == "shared-two"
    assert "shared-two" in st.comparison.methods.options and "shared-two" not in st.comparison.library.options


def test_cli_lists_starter_and_refuses_to_remove_it(tmp_path, starter, monkeypatch):
    env = {"MMICT_VLIBRARY": str(tmp_path / "own"), "MMICT_STARTER_LIBRARY": str(starter.root),
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "mmict_core.cli", "vlibrary", *a], env=env,
                                    capture_output=True, text=True, timeout=120)
    out = run("list")
    assert out.returncode == 0 and "binding.lora" in out.stdout and "starter (read-only)" in out.stdout
    assert "0.900" in out.stdout  # its held-out accuracy
    assert "binding.lora" not in run("list", "--no-starter").stdout
    bad = run("remove", "binding.lora")
    assert bad.returncode == 2 and "read-only" in bad.stderr and "Traceback" not in bad.stderr
