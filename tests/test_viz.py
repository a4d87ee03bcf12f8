"""mmict_core.viz: every number a figure shows is re-computed here with plain numpy / loops, the
case study's HTML is self-contained and escaped, its PNG marks have the right colours, and the
package imports no model code."""
from __future__ import annotations

import ast
import base64
import html
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest
from PIL import Image

import mmict_core.viz as viz
from mmict_core.viz import (MARK_COLORS, accuracy_vs_shots, case_study_html, case_study_layout, case_study_png,
                            collapse_image_bands, loss_curve, save_case_study, slot_weights_figure,
                            upscale_nearest, virtual_mass_grid, virtual_mass_per_token)

VIZ_DIR = Path(viz.__file__).parent


# ---------------------------------------------------------------- the package rule


def test_viz_imports_no_model_code():
    """Statically: no import of torch / transformers / backbones / methods in any viz module."""
    banned = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")
    for f in sorted(VIZ_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for n in names:
                assert n.split(".")[0] not in banned, f"{f.name} imports {n}"
                assert not re.search(r"(^|\.)(backbones|methods|inspect|train)(\.|$)", n.lstrip(".")) \
                    or n.startswith("plotly"), f"{f.name} imports {n}"
                assert not n.startswith(".."), f"{f.name} imports {n} from outside viz"


def test_importing_viz_loads_no_torch():
    """Dynamically, in a fresh interpreter (the test session itself has torch from conftest)."""
    code = ("import sys, mmict_core.viz; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers') or m.startswith(('mmict_core.backbones', 'mmict_core.methods'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=VIZ_DIR.parents[1])
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------- curves


def hand_ema(xs, s):
    out, prev = [], None
    for x in xs:
        prev = x if prev is None else s * prev + (1 - s) * x
        out.append(prev)
    return out


@pytest.mark.parametrize("smoothing", [0.9, 0.5, 0.0])
def test_loss_curve_raw_and_ema(smoothing):
    losses = list(np.random.default_rng(3).uniform(0.5, 3.0, size=40))
    fig = loss_curve(losses, smoothing=smoothing, title="my loss")
    assert isinstance(fig, go.Figure) and fig.layout.title.text == "my loss"
    raw, smooth = fig.data
    assert list(raw.x) == list(range(1, 41)) and list(smooth.x) == list(range(1, 41))
    np.testing.assert_allclose(raw.y, losses)
    np.testing.assert_allclose(smooth.y, hand_ema(losses, smoothing), rtol=0, atol=1e-12)
    assert raw.opacity < 1 and raw.line.width < smooth.line.width  # raw: thin and translucent


def test_loss_curves_keep_every_run():
    runs = {"a": [3.0, 2.0, 1.0], "b": [5.0, 4.0], "c": [1.0]}
    fig = viz.loss_curves(runs, smoothing=0.5)
    legend = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in legend] == ["a", "b", "c"]  # one named curve per run, none overwritten
    for t, (label, y) in zip(legend, runs.items()):
        np.testing.assert_allclose(t.y, hand_ema(y, 0.5), rtol=0, atol=1e-12)
        assert list(t.x) == list(range(1, len(y) + 1))
    raw = [t for t in fig.data if t.showlegend is False]
    assert [list(t.y) for t in raw] == list(runs.values())
    assert len({t.line.color for t in legend}) == 3


def test_accuracy_intervals_bars_and_error_bars():
    res = {"ft-vqa": {"a": (0.5, 0.4, 0.7), "b": (0.9, 0.85, 0.95)}, "ft-caption": {"a": (0.1, 0.05, 0.2)}}
    fig = viz.accuracy_intervals(res, chance={"ft-vqa": 0.0, "ft-caption": 0.25})
    a, b = fig.data
    assert list(a.x) == ["ft-vqa", "ft-caption"] and list(b.x) == ["ft-vqa"]
    np.testing.assert_allclose(a.y, [0.5, 0.1])
    np.testing.assert_allclose(a.error_y.array, [0.2, 0.1])  # hi - acc
    np.testing.assert_allclose(a.error_y.arrayminus, [0.1, 0.05])  # acc - lo
    lines = [s for s in fig.layout.shapes if s.line.dash == "dash"]
    assert sorted(s.y0 for s in lines) == [0.0, 0.25]  # one chance line per task
    one = viz.accuracy_intervals(res, chance=0.5)
    assert [s.y0 for s in one.layout.shapes] == [0.5]


def test_ema_actually_smooths():
    losses = [1.0, 0.0, 1.0, 0.0, 1.0]
    y = np.asarray(loss_curve(losses, smoothing=0.9).data[1].y)
    assert y[0] == 1.0 and y[1] == pytest.approx(0.9) and y[2] == pytest.approx(0.91)
    with pytest.raises(ValueError):
        loss_curve(losses, smoothing=1.0)


@pytest.mark.parametrize("losses", [[], [2.5]])
def test_loss_curve_zero_or_one_point(losses):
    fig = loss_curve(losses)
    assert fig.layout.xaxis.title.text == "step" and fig.layout.yaxis.title.text == "loss"
    assert sum(len(t.y) for t in fig.data) == 2 * len(losses)
    if losses:
        assert list(fig.data[1].y) == [2.5] and list(fig.data[0].x) == [1]
    fig.to_json()  # serialises without error


def test_accuracy_vs_shots():
    results = {"MMICT": {8: 0.7, 0: 0.3, 4: 0.6}, "ICL": {0: 0.25, 4: 0.4}}
    fig = accuracy_vs_shots(results, chance=0.25)
    assert [t.name for t in fig.data] == ["MMICT", "ICL"]
    assert list(fig.data[0].x) == [0, 4, 8] and list(fig.data[0].y) == [0.3, 0.6, 0.7]
    assert list(fig.data[1].x) == [0, 4] and list(fig.data[1].y) == [0.25, 0.4]
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].y0 == lines[0].y1 == 0.25 and lines[0].line.dash == "dash"
    assert not accuracy_vs_shots(results).layout.shapes  # no chance line unless asked


def test_accuracy_vs_shots_per_task_chance_hover_and_error_bars():
    results = {"binding": {0: 0.03, 4: 0.98}, "format": {0: 0.0, 4: 0.96}, "operator": {0: 0.36, 4: 0.9}}
    fig = accuracy_vs_shots(results, chance={"binding": 0.5, "format": 0.5, "operator": 0.1})
    lines = sorted((s.y0, s.line.dash) for s in fig.layout.shapes if s.type == "line")
    assert lines == [(0.1, "dash"), (0.5, "dash")]  # one line per distinct level
    notes = sorted(a.text for a in fig.layout.annotations)
    assert notes == ["chance binding, format 0.5", "chance operator 0.1"]
    assert "accuracy %{y:.3f}" in fig.data[0].hovertemplate
    tok = accuracy_vs_shots({"binding": {0: 196, 4: 320}}, value="LM tokens", fmt=".0f")
    assert "LM tokens %{y:.0f}" in tok.data[0].hovertemplate and "accuracy" not in tok.data[0].hovertemplate
    assert tok.layout.yaxis.title.text == "LM tokens"
    err = accuracy_vs_shots({"a": {0: 0.5, 4: 0.8}}, errors={"a": {0: (0.4, 0.7), 4: (0.8, 0.9)}})
    e = err.data[0].error_y
    assert list(e.array) == pytest.approx([0.2, 0.1]) and list(e.arrayminus) == pytest.approx([0.1, 0.0])
    assert accuracy_vs_shots(results).data[0].error_y.array is None  # no bars unless asked


# ---------------------------------------------------------------- attention

# A hand-built episode: BOS, demo 0 (prompt, 3 image tokens, answer), query 1 (2 images tokens, prompt).
ROLES = ["bos", "prompt", "image", "image", "image", "answer", "sep", "image", "image", "prompt", "marker"]
ITEMS = [-1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
LABELS = ["<bos>", "what", "<img 0>", "<img 1>", "<img 2>", "red", "\n", "<img 0>", "<img 1>", "colour", "<answer>"]


def test_collapse_image_bands_by_hand():
    v = np.arange(11, dtype=float) ** 2  # (T,) distinct values
    out, labels = collapse_image_bands(v, ROLES, ITEMS, LABELS)
    expected = [0, 1, (4 + 9 + 16) / 3, 25, 36, (49 + 64) / 2, 81, 100]
    np.testing.assert_allclose(out, expected)
    assert labels == ["0 <bos>", "1 what", "2-4 [image: demo 0]", "5 red", "6 \\n", "7-8 [image: query]",
                      "9 colour", "10 <answer>"]
    assert len(set(labels)) == len(labels)


def test_collapse_splits_adjacent_bands_of_different_items_and_keeps_leading_axes():
    roles = ["image"] * 4 + ["prompt"]
    items = [0, 0, 1, 1, 2]  # two demos' images back to back; the query (2) has no image
    v = np.random.default_rng(0).random((2, 3, 5))  # (L, H, T)
    out, labels = collapse_image_bands(v, roles, items, ["<img 0>", "<img 1>", "<img 0>", "<img 1>", "q"])
    assert out.shape == (2, 3, 3)
    np.testing.assert_allclose(out[..., 0], v[..., 0:2].mean(-1))
    np.testing.assert_allclose(out[..., 1], v[..., 2:4].mean(-1))
    np.testing.assert_allclose(out[..., 2], v[..., 4])
    assert labels == ["0-1 [image: demo 0]", "2-3 [image: demo 1]", "4 q"]
    with pytest.raises(ValueError):
        collapse_image_bands(v[..., :4], roles, items, ["a"] * 5)


@pytest.fixture
def vkv():
    """Random attention split with a known seed: L=3, H=4, T=11, n=5; slots sum to the virtual mass."""
    rng = np.random.default_rng(1234)
    vm = rng.uniform(0, 1, size=(3, 4, 11))  # (L, H, T)
    share = rng.dirichlet(np.ones(5), size=(3, 4, 11))  # (L, H, T, n)
    return vm, share * vm[..., None]


def test_virtual_mass_grid_all_and_selected(vkv):
    vm, _ = vkv
    fig = virtual_mass_grid(vm)
    hm = fig.data[0]
    expected = np.array([[np.mean([vm[l, h, t] for t in range(11)]) for h in range(4)] for l in range(3)])
    np.testing.assert_allclose(np.asarray(hm.z), expected, atol=1e-12)
    assert list(hm.y) == ["L0", "L1", "L2"] and list(hm.x) == ["H0", "H1", "H2", "H3"]
    assert hm.zmin == 0 and hm.zmax == 1 and "%{z:.4f}" in hm.hovertemplate
    assert "layer" in hm.hovertemplate and "head" in hm.hovertemplate and "all 11 positions" in fig.layout.title.text
    sel = [2, 5, 9]
    fig = virtual_mass_grid(vm, positions=sel)
    np.testing.assert_allclose(np.asarray(fig.data[0].z), vm[:, :, sel].sum(-1) / 3, atol=1e-12)
    assert "3 selected positions" in fig.layout.title.text
    with pytest.raises(ValueError):
        virtual_mass_grid(vm, positions=[])
    with pytest.raises(IndexError):
        virtual_mass_grid(vm, positions=[11])


def test_virtual_mass_per_token_layers(vkv):
    vm, _ = vkv
    fig = virtual_mass_per_token(vm, ROLES, ITEMS, LABELS)
    hm = fig.data[0]
    head_mean = vm.sum(axis=1) / 4  # (L, T)
    cols = [[0], [1], [2, 3, 4], [5], [6], [7, 8], [9], [10]]
    expected = np.stack([head_mean[:, c].mean(-1) for c in cols], axis=-1)  # (L, 8)
    np.testing.assert_allclose(np.asarray(hm.z), expected, atol=1e-12)
    assert list(hm.y) == ["L0", "L1", "L2"]
    assert list(hm.x) == collapse_image_bands(vm[0, 0], ROLES, ITEMS, LABELS)[1]
    assert fig.layout.yaxis.autorange == "reversed" and "%{z:.4f}" in hm.hovertemplate
    # image bands marked: outlined columns 2 and 5, bold tick labels there only
    rects = [(s.x0, s.x1) for s in fig.layout.shapes if s.type == "rect"]
    assert rects == [(1.5, 2.5), (4.5, 5.5)]
    bold = [i for i, t in enumerate(fig.layout.xaxis.ticktext) if t.startswith("<b>")]
    assert bold == [2, 5] and "[image: query]" in fig.layout.xaxis.ticktext[5]
    assert "&lt;bos&gt;" in fig.layout.xaxis.ticktext[0]  # '<bos>' would be eaten as a tag by plotly


def test_virtual_mass_per_token_one_layer_gives_head_rows(vkv):
    vm, _ = vkv
    fig = virtual_mass_per_token(vm, ROLES, ITEMS, LABELS, layer=1)
    hm = fig.data[0]
    assert list(hm.y) == ["H0", "H1", "H2", "H3"]
    z = np.asarray(hm.z)
    assert z.shape == (4, 8)
    np.testing.assert_allclose(z[:, 0], vm[1, :, 0])
    np.testing.assert_allclose(z[:, 2], (vm[1, :, 2] + vm[1, :, 3] + vm[1, :, 4]) / 3)
    np.testing.assert_allclose(z[:, 5], (vm[1, :, 7] + vm[1, :, 8]) / 2)
    np.testing.assert_allclose(z[:, 7], vm[1, :, 10])
    np.testing.assert_allclose(np.asarray(virtual_mass_per_token(vm, ROLES, ITEMS, LABELS, layer=-1).data[0].z)[:, 1],
                               vm[2, :, 1])
    with pytest.raises(IndexError):
        virtual_mass_per_token(vm, ROLES, ITEMS, LABELS, layer=3)


def test_slot_weights_figure(vkv):
    _, w = vkv
    fig = slot_weights_figure(w)
    hm = fig.data[0]
    L, H, T, n = w.shape
    expected = np.zeros((L, n))
    for l in range(L):
        for s in range(n):
            expected[l, s] = sum(w[l, h, t, s] for h in range(H) for t in range(T)) / (H * T)
    np.testing.assert_allclose(np.asarray(hm.z), expected, atol=1e-12)
    assert list(hm.x) == [f"S{s}" for s in range(n)] and list(hm.y) == ["L0", "L1", "L2"]
    assert "%{z:.4f}" in hm.hovertemplate
    sel = [0, 7]
    np.testing.assert_allclose(np.asarray(slot_weights_figure(w, positions=sel).data[0].z),
                               w[:, :, sel, :].mean(axis=(1, 2)), atol=1e-12)
    # slots sum to the virtual mass, so the summed slot figure equals the grid's layer means
    np.testing.assert_allclose(np.asarray(hm.z).sum(-1), np.asarray(virtual_mass_grid(w.sum(-1)).data[0].z).mean(-1))


# ---------------------------------------------------------------- case study


def small_image(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


ROWS = [
    {"method": "MMICT", "output": "red <b>circle</b>", "correct": True, "latency_ms": 12.34, "lm_tokens": 48},
    {"method": "zero-shot", "output": "blue", "correct": False, "latency_ms": 8.0, "lm_tokens": 20},
    {"method": "HiFICL", "output": "maybe", "correct": None, "latency_ms": 9.5, "lm_tokens": 22},
]
DEMOS = [(small_image(8, 8, 1), "what colour?", "green"), (small_image(16, 16, 2), "and this?", "<yellow>")]


def data_images(page: str) -> list[Image.Image]:
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]


def test_upscale_nearest():
    img = small_image(12, 8)
    up = upscale_nearest(img)
    assert up.size == (96, 144)  # min side 8 -> factor 12
    a = np.asarray(up)
    assert np.array_equal(a[::12, ::12], img) and np.array_equal(a[11::12, 11::12], img)  # nearest: blocks
    big = small_image(100, 120)
    assert upscale_nearest(big).size == (120, 100)


def test_case_study_html_self_contained_and_escaped():
    q = "<script>alert('x')</script> what colour?"
    page = case_study_html(small_image(8, 8), q, "red & round", ROWS, demos=DEMOS, title="T <1>")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>") and "<style>" in page
    assert "<script>" not in page and html.escape(q) in page
    assert "red &lt;b&gt;circle&lt;/b&gt;" in page and "&lt;yellow&gt;" in page and "red &amp; round" in page
    assert "<title>T &lt;1&gt;</title>" in page
    for bad in ("http://", "https://", 'src="/', "url("):
        assert bad not in page
    imgs = data_images(page)
    assert [im.size for im in imgs] == [(96, 96), (96, 96), (96, 96)]  # demo 8px x12, demo 16px x6, query x12
    assert np.array_equal(np.asarray(imgs[-1].convert("RGB"))[::12, ::12], small_image(8, 8))
    assert len(re.findall(r'src="', page)) == 3  # nothing but the three data images is loaded
    # table: one row per method in order, with its mark, latency and token count
    body = page.split("<tbody>")[1]
    trs = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
    assert len(trs) == 3
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S) for tr in trs]
    assert [c[0] for c in cells] == ["MMICT", "zero-shot", "HiFICL"]
    assert [c[2] for c in cells] == ["✓", "✗", "?"]
    assert [c[3] for c in cells] == ["12.3", "8.0", "9.5"] and [c[4] for c in cells] == ["48", "20", "22"]


def test_case_study_html_without_demos_or_answer():
    page = case_study_html(small_image(200, 100), "q?", None, ROWS[:1])
    assert "In-context demos" not in page and "<i>none</i>" in page
    assert [im.size for im in data_images(page)] == [(100, 200)]  # already >= 96: not resized


def test_case_study_png_layout_and_marks():
    img = case_study_png(small_image(8, 8), "what colour?", "red", ROWS, demos=DEMOS)
    lay = case_study_layout((8, 8, 3), len(ROWS), [(8, 8, 3), (16, 16, 3)])
    assert img.mode == "RGB" and img.size == (lay.width, lay.height)
    assert img.getpixel((1, 1)) == (255, 255, 255)  # white background
    marks = []
    for box in lay.mark_boxes:
        cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
        marks.append(img.getpixel((cx, cy)))
    assert marks == [MARK_COLORS[True], MARK_COLORS[False], MARK_COLORS[None]]
    (r1, g1, b1), (r2, g2, b2), (r3, g3, b3) = marks
    assert g1 > r1 + 60 and g1 > b1 + 60  # correct: green
    assert r2 > g2 + 60 and r2 > b2 + 60  # wrong: red
    assert max(r3, g3, b3) - min(r3, g3, b3) < 30 and 100 < r3 < 220  # unknown: grey
    # the query image is pasted nearest-upscaled into its box (8 px -> 192 px, factor 24)
    x0, y0, x1, y1 = lay.query_box
    assert (x1 - x0, y1 - y0) == (192, 192)
    q = np.asarray(img)[y0:y1, x0:x1]
    assert np.array_equal(q[::24, ::24], small_image(8, 8)) and np.array_equal(q[23::24, 23::24], small_image(8, 8))
    # demo thumbnails too
    d0 = np.asarray(img)[lay.demo_boxes[1][1]:lay.demo_boxes[1][3], lay.demo_boxes[1][0]:lay.demo_boxes[1][2]]
    assert d0.shape == (96, 96, 3) and np.array_equal(d0[::6, ::6], DEMOS[1][0])
    # rows are separate lines and text was drawn on them (dark pixels right of each mark)
    a = np.asarray(img).astype(int)
    for ry in lay.row_y:
        band = a[ry:ry + 20, lay.columns["method"]:lay.columns["latency"]]
        assert (band.sum(-1) < 300).any()


def test_case_study_png_no_demos_and_long_text():
    rows = [{"method": "m" * 80, "output": "word " * 200, "correct": False, "latency_ms": 1, "lm_tokens": 2}]
    img = case_study_png(small_image(300, 500), "q " * 300, None, rows)
    lay = case_study_layout((300, 500, 3), 1)
    assert img.size == (lay.width, lay.height) and lay.demo_boxes == []
    assert lay.query_box[2] - lay.query_box[0] == 192  # large images shrink to fit
    box = lay.mark_boxes[0]
    assert img.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)) == MARK_COLORS[False]
    # long text is clipped inside the canvas: the right margin stays white
    assert (np.asarray(img)[:, -8:] == 255).all()


def test_save_case_study(tmp_path):
    png, page = save_case_study(tmp_path / "out" / "case.1", small_image(), "q?", "a", ROWS, demos=DEMOS)
    assert png == tmp_path / "out" / "case.1.png" and page == tmp_path / "out" / "case.1.html"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == case_study_png(small_image(), "q?", "a", ROWS, DEMOS).size
    assert page.read_text(encoding="utf-8") == case_study_html(small_image(), "q?", "a", ROWS, DEMOS)
