"""Bad input, as a new user would type it, through the running app (gradio_client), its handlers and
the CLI: each case asserts the message the user sees (no server path, no Python internals) and that
the next, good request still works."""
from __future__ import annotations

import io
import os
import socket

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from app.handlers import Studio  # noqa: E402
from mmict_core.cli import main  # noqa: E402
from mmict_core.data.example import load_image  # noqa: E402
from mmict_core.messages import INTERNAL, public_message  # noqa: E402
from mmict_core.vlibrary import LibraryError, VLibrary  # noqa: E402

NO_INTERNALS = ("/tmp", "gradio", "Traceback", "BufferedReader", "Error:", "<_io")


def _clean(msg: str) -> str:
    for bad in NO_INTERNALS:
        assert bad not in msg, f"{bad!r} leaked into the user's message: {msg!r}"
    return msg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(path, value=90):
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(path)
    return str(path)


class Req:
    def __init__(self, h):
        self.session_hash = h


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from gradio_client import Client

    from app.main import launch

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    demo, url, studio = launch(block=False, port=_free_port(), workdir=tmp_path_factory.mktemp("served"))
    c = Client(url, verbose=False)
    try:
        yield c, studio, tmp_path_factory.mktemp("files")
    finally:
        c.close()
        demo.close()


def _error(call) -> str:
    with pytest.raises(Exception) as exc:
        call()
    return _clean(str(exc.value))


# ---------------------------------------------------------------------------------------------
# images


def test_unreadable_upload_names_the_file_only(served):
    from gradio_client import handle_file

    c, studio, files = served
    zero = files / "zero.png"
    zero.write_bytes(b"")
    msg = _error(lambda: c.predict(handle_file(str(zero)), "what is this ?", "vex", api_name="/upload_demo"))
    assert "zero.png is not a readable image; use a PNG or JPEG file" in msg
    gal, *_ = c.predict(handle_file(_png(files / "ok.png")), "what is this ?", "vex", api_name="/upload_demo")
    assert "upload" in gal[-1]["caption"]


def test_sixteen_bit_grey_tiff_maps_to_the_right_8bit_values(tmp_path, served):
    from gradio_client import handle_file

    v16 = np.array([[0, 257, 1000, 32768], [40000, 65000, 65535, 128]], np.uint16)
    path = tmp_path / "scan.tif"
    Image.fromarray(v16).save(path)
    assert Image.open(path).mode.startswith("I;16")
    got = load_image(path)
    expected = np.rint(v16.astype(np.float64) * 255 / 65535).astype(np.uint8)  # 65535 -> 255, 257 -> 1
    assert got.shape == (2, 4, 3) and np.array_equal(got[..., 0], expected) and np.array_equal(got[..., 2], expected)
    c, studio, files = served
    gal, *_ = c.predict(handle_file(str(path)), "what is this ?", "vex", api_name="/upload_demo")
    assert "upload" in gal[-1]["caption"]


@pytest.mark.parametrize("mode", ["I", "F", "LA", "P", "CMYK", "I;16"])
def test_other_modes_convert_as_a_plain_recomputation(mode):
    rng = np.random.default_rng(0)
    if mode in ("I", "I;16"):
        a = rng.integers(0, 65536, size=(3, 5)).astype(np.int32 if mode == "I" else np.uint16)
        im, ref = Image.fromarray(a, mode=None if mode == "I;16" else "I"), np.rint(a.astype(np.float64) * 255 / 65535)
        ref = np.repeat(ref[..., None], 3, -1)
    elif mode == "F":
        a = rng.random((3, 5)).astype(np.float32)
        im, ref = Image.fromarray(a, mode="F"), np.repeat(np.rint(a.astype(np.float64) * 255)[..., None], 3, -1)
    elif mode == "LA":
        la = np.stack([rng.integers(0, 256, (3, 5)), rng.integers(0, 256, (3, 5))], -1).astype(np.uint8)
        im = Image.fromarray(la, mode="LA")
        alpha = la[..., 1:2] / 255.0
        ref = np.rint(la[..., :1] * alpha + 255 * (1 - alpha)).repeat(3, -1)  # composited on white
    elif mode == "P":
        rgb = rng.integers(0, 256, (3, 5, 3)).astype(np.uint8)
        im = Image.fromarray(rgb).convert("P")
        ref = np.asarray(im.convert("RGB"))  # the palette's colours
    else:  # CMYK: PIL's own conversion
        im = Image.fromarray(rng.integers(0, 256, (3, 5, 3)).astype(np.uint8)).convert("CMYK")
        ref = np.asarray(im.convert("RGB"))
    buf = io.BytesIO()
    fmt = "TIFF" if mode in ("I", "F", "CMYK", "I;16") else "PNG"
    im.save(buf, format=fmt)
    got = load_image(buf.getvalue())
    assert got.dtype == np.uint8 and got.shape == (3, 5, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


# ---------------------------------------------------------------------------------------------
# typed text


def test_control_tokens_are_refused_and_the_next_query_works(served):
    c, studio, files = served
    for text in ("what is <image> ?", "what colour <answer> is it ?", "describe it [EOS]", "[bos] shape"):
        msg = _error(lambda: c.predict(None, text, "", api_name="/set_query"))
        assert "one of the model's control tokens, not a word; remove it" in msg
    gal, summary, img, prompt, answer = c.predict(None, "what shape is it ?", "", api_name="/set_query")
    assert prompt == "what shape is it ?"


def test_unknown_words_are_named_with_a_close_match(monkeypatch):
    studio = Studio(pool_size=6)
    seen = []
    monkeypatch.setattr(gr, "Warning", lambda m, *a, **k: seen.append(m))
    studio.set_query(None, "what color is the sqare ?", "", Req("w"))
    assert "'color' is not in the teaching model's vocabulary — did you mean 'colour'?" in seen
    assert "'sqare' is not in the teaching model's vocabulary — did you mean 'square'?" in seen
    assert studio.session(Req("w")).query.prompt == "what color is the sqare ?"  # a warning, not a refusal
    seen.clear()
    studio.set_query(None, "what colour is it ?", "", Req("w"))
    assert seen == []


def test_query_picked_as_a_demo_and_duplicate_demos_are_flagged():
    studio = Studio(pool_size=6)
    r = Req("q")
    s = studio.session(r)
    studio.query_from_gallery(3, r)  # Pool # counts from 1: item index 2
    s.selected = [2]  # the item now also the query, picked again
    summary = studio.refresh(r)[1]
    assert "demonstration 1 is the query itself: the model can copy its answer; remove it" in summary
    s.uploads.append(s.pool[3])  # an upload identical to pool item 3
    s.selected = [0, 3, len(s.pool)]
    summary = studio.refresh(r)[1]
    assert "demonstrations 2 and 3 are the same example" in summary and "query itself" not in summary
    s.selected = [0, 1]
    assert "⚠" not in studio.refresh(r)[1]


# ---------------------------------------------------------------------------------------------
# training values


def test_out_of_range_training_values_are_refused_not_defaulted(served):
    c, studio, files = served
    assert "learning rate must be between 1e-6 and 1, got 0.0" in _error(
        lambda: c.predict("lora", "binding", 8, 2, 0, 2, 0, api_name="/train"))
    assert "rank must be a whole number between 1 and 256, got 0" in _error(
        lambda: c.predict("lora", "binding", 8, 2, 5e-3, 0, 0, api_name="/train"))
    assert "steps must be a whole number between 1 and 5000, got 0" in _error(
        lambda: c.predict("lora", "binding", 8, 0, 5e-3, 2, 0, api_name="/train"))
    status, _ = c.predict("lora", "binding", 8, 2, 5e-3, 2, 0, api_name="/train")
    assert "finished: 2 steps" in status


def test_a_diverging_run_says_so_and_stores_nothing(served, monkeypatch):
    from mmict_core.methods.lora.model import LoRA

    c, studio, files = served
    real = LoRA.loss
    monkeypatch.setattr(LoRA, "loss", lambda self, eps, loss_on="query": (
        (lambda out: (out[0] * float("nan"), out[1]))(real(self, eps, loss_on=loss_on))))
    msg = _error(lambda: c.predict("lora", "binding", 8, 3, 5e-3, 2, 0, api_name="/train"))
    assert "training diverged at step 1: lower the learning rate" in msg
    monkeypatch.setattr(LoRA, "loss", real)
    names = [x[0] for x in c.predict(api_name="/method_choices")["choices"]]
    assert not any(n.startswith("lora-binding-3s") for n in names)
    status, _ = c.predict("lora", "binding", 8, 3, 5e-3, 2, 0, api_name="/train")
    assert "finished: 3 steps" in status


def test_an_internal_error_shows_no_internals(served, monkeypatch):
    c, studio, files = served
    from mmict_core.workbench import Session

    def boom(self, *a, **k):
        raise RuntimeError("tensor at /srv/secret/x.bin: element 0 of tensors does not require grad")

    monkeypatch.setattr(Session, "auto_fill", boom)
    msg = _error(lambda: c.predict("random", 3, 0, api_name="/auto_fill"))
    assert INTERNAL in msg and "secret" not in msg and "grad" not in msg
    monkeypatch.undo()
    gal, summary, *_ = c.predict("random", 3, 0, api_name="/auto_fill")
    assert "**3 demonstrations**" in summary


def test_public_message_strips_paths_and_reprs():
    e = ValueError("/tmp/gradio/ab12/zero.png is not a readable image (cannot identify image file "
                   "<_io.BufferedReader name='/tmp/gradio/ab12/zero.png'>)")
    assert public_message(e) == "zero.png is not a readable image (cannot identify image file the file)"
    assert public_message(OSError(r"cannot open C:\Users\ann\x.png")) == "cannot open x.png"


# ---------------------------------------------------------------------------------------------
# server settings


def test_analytics_are_off():
    from app.main import build_app

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert build_app(Studio(pool_size=4)).analytics_enabled is False


def test_load_backbone_beyond_localhost_stays_in_the_allowed_roots(served, tmp_path):
    c, studio, files = served
    studio.public = True  # as when served with --host 0.0.0.0 or --share
    try:
        msgs = {_error(lambda p=p: c.predict(p, "none", api_name="/load_backbone"))
                for p in ("/etc", "/no/such/folder", "../../etc/passwd", str(tmp_path))}
        assert len(msgs) == 1, "the refusal must not tell existing and missing paths apart"
        assert "only loads the teaching backbone and the backbones its operator allowed" in msgs.pop()
        studio.allowed_roots.append(tmp_path.resolve())
        assert "could not load backbone" in _error(lambda: c.predict(str(tmp_path), "none", api_name="/load_backbone"))
        assert "teaching" in c.predict("teaching", "none", api_name="/load_backbone")
    finally:
        studio.public = False
        studio.allowed_roots.pop()


# ---------------------------------------------------------------------------------------------
# VLibrary names and leftovers


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    from mmict_core.backbones import load_backbone
    from mmict_core.methods import get_method

    cls = get_method("lora")
    path = tmp_path_factory.mktemp("adapter") / "a"
    cls(load_backbone("teaching"), cls.config_class(r=2)).save(path)
    return path


@pytest.mark.parametrize("name", ["con", "CON", "nul.txt", "Com1.json", "lpt9", "aux.tar.gz", "prn", "abc."])
def test_reserved_names_are_refused(name, adapter_dir, tmp_path, capsys):
    root = str(tmp_path / "lib")
    rc = main(["vlibrary", "add", name, "--from", str(adapter_dir), "--task", "binding", "--root", root])
    err = capsys.readouterr().err
    assert rc == 2 and ("Windows reserves" in err or "Windows drops" in err), err
    assert main(["vlibrary", "add", "console", "--from", str(adapter_dir), "--task", "binding", "--root", root]) == 0


def test_names_equal_ignoring_case_are_refused_and_the_flag_is_named(adapter_dir, tmp_path, capsys):
    root = str(tmp_path / "lib")
    add = ["--from", str(adapter_dir), "--task", "binding", "--root", root]
    assert main(["vlibrary", "add", "Binding-V1", *add]) == 0
    assert main(["vlibrary", "add", "binding-v1", *add]) == 2
    assert "'Binding-V1', the same name as 'binding-v1' ignoring case" in capsys.readouterr().err
    assert main(["vlibrary", "add", "Binding-V1", *add]) == 2
    err = capsys.readouterr().err
    assert "add --overwrite" in err and "overwrite=True" not in err
    assert main(["vlibrary", "add", "Binding-V1", *add, "--overwrite"]) == 0
    with pytest.raises(LibraryError, match="pass overwrite=True"):  # the Python API keeps its own wording
        VLibrary(root).add_folder("Binding-V1", adapter_dir, task="binding")


def test_stale_temp_entries_are_cleaned_on_open(adapter_dir, tmp_path, capsys):
    root = tmp_path / "lib"
    lib = VLibrary(root)
    lib.add_folder("kept", adapter_dir, task="binding")
    (root / ".tmp-abc123" / "adapter").mkdir(parents=True)
    (root / ".trash-x1").mkdir()
    (root / ".tmp-file").write_text("half")
    assert main(["vlibrary", "list", "--root", str(root)]) == 0
    assert "kept" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["kept"]
