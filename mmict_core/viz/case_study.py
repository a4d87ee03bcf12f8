"""The case-study figure: one query, several methods' outputs side by side (as in the MMICT paper).

Two renderings of the same content:

- :func:`case_study_html`: one self-contained HTML document (inline CSS, images as base64 PNG data
  URIs, no external URL);
- :func:`case_study_png`: a PIL image drawn with ``ImageDraw`` and PIL's default font.

A *row* is a plain dict: ``method`` (str), ``output`` (str), ``correct`` (True / False / None =
unknown), ``latency_ms`` (float), ``lm_tokens`` (int).  Images are ``np.ndarray`` (H, W, 3) uint8;
a demo is ``(image, prompt, answer)``.  No model code here.
"""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["MARK_COLORS", "CaseStudyLayout", "case_study_layout", "upscale_nearest", "case_study_html",
           "case_study_png", "save_case_study"]

Demo = tuple[np.ndarray, str, str]  # (image (H, W, 3) uint8, prompt, answer)

MIN_PX = 96  # small images are upscaled (nearest) until both sides are at least this
MAX_PX = 1024  # ... but an upscale never makes the longer side exceed this
MARK_COLORS = {True: (22, 163, 74), False: (220, 38, 38), None: (156, 163, 175)}  # green, red, grey
_MARK_TEXT = {True: "✓", False: "✗", None: "?"}
_MARK_CLASS = {True: "ok", False: "bad", None: "unknown"}

# PNG geometry (pixels)
_M, _GAP, _TITLE_H, _LINE_H, _MARK = 16, 12, 28, 20, 12
_DEMO_BOX, _DEMO_CELL_W, _CAPTION_H, _QUERY_BOX, _MIN_W = 96, 168, 16, 192, 760


# ---------------------------------------------------------------- images


def _to_pil(image) -> Image.Image:
    """(H, W, 3) uint8 (also (H, W), (H, W, 1|4), or floats in [0, 1]) -> an RGB PIL image."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = np.clip(np.round(a * 255.0), 0, 255) if np.issubdtype(a.dtype, np.floating) else np.clip(a, 0, 255)
        a = a.astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]  # (H, W) -> (H, W, 1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or 0 in a.shape[:2]:
        raise ValueError(f"expected an image array (H, W, 3), got shape {a.shape}")
    a = np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a[:, :, :3]  # (H, W, 3)
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def _upscale_factor(h: int, w: int, min_px: int = MIN_PX) -> int:
    """Integer factor that brings min(h, w) up to ``min_px`` (1 if already there; capped at MAX_PX)."""
    if min(h, w) >= min_px:
        return 1
    f = math.ceil(min_px / min(h, w))
    return max(1, min(f, MAX_PX // max(h, w)))


def upscale_nearest(image, min_px: int = MIN_PX) -> Image.Image:
    """image (H, W, 3) -> RGB PIL image (H*f, W*f), f the smallest integer making both sides >= min_px
    (nearest neighbour, so pixels stay crisp; f = 1 for images already that large)."""
    im = _to_pil(image)
    f = _upscale_factor(im.height, im.width, min_px)
    return im if f == 1 else im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)


def _fit(image, box: int) -> Image.Image:
    """For the PNG: integer nearest upscale to fill ``box`` x ``box`` at most, or shrink to fit."""
    im = _to_pil(image)
    side = max(im.width, im.height)
    if side > box:
        s = box / side
        return im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)
    f = box // side
    return im if f == 1 else im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)


def _fit_size(shape: Sequence[int], box: int) -> tuple[int, int]:
    """(w, h) that :func:`_fit` gives an image of shape (H, W, ...)."""
    h, w = int(shape[0]), int(shape[1])
    side = max(h, w)
    if side > box:
        s = box / side
        return max(1, round(w * s)), max(1, round(h * s))
    f = box // side
    return w * f, h * f


def _png_data_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- rows


def _row(r: Mapping) -> dict:
    """A row dict checked and normalised: method, output (str), correct (bool | None), latency, tokens."""
    if not isinstance(r, Mapping) or "method" not in r or "output" not in r:
        raise ValueError(f"a row needs at least 'method' and 'output', got {r!r}")
    c = r.get("correct")
    lat, tok = r.get("latency_ms"), r.get("lm_tokens")
    return {"method": str(r["method"]), "output": str(r["output"]), "correct": None if c is None else bool(c),
            "latency": "-" if lat is None else f"{float(lat):.1f}",
            "tokens": "-" if tok is None else str(int(tok))}


# ---------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1f2937; }
h1 { font-size: 1.3em; margin: 0 0 12px; }
h2 { font-size: 1em; color: #6b7280; margin: 16px 0 6px; font-weight: 600; }
img { image-rendering: pixelated; border: 1px solid #d1d5db; }
.demos { display: flex; gap: 12px; flex-wrap: wrap; }
.demos figure { margin: 0; max-width: 180px; font-size: 0.85em; }
.demos figcaption { margin-top: 4px; overflow-wrap: anywhere; }
.query { display: flex; gap: 16px; align-items: flex-start; }
.query .q { font-size: 1.05em; overflow-wrap: anywhere; }
table { border-collapse: collapse; margin-top: 8px; min-width: 520px; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 6px 10px; text-align: left; vertical-align: top; }
th { background: #f9fafb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.output { white-space: pre-wrap; overflow-wrap: anywhere; max-width: 420px; }
td.mark { text-align: center; font-weight: 700; }
td.ok { color: rgb(22, 163, 74); } td.bad { color: rgb(220, 38, 38); } td.unknown { color: rgb(156, 163, 175); }
"""


def _img_tag(image, alt: str) -> str:
    im = upscale_nearest(image)
    return f'<img src="{_png_data_uri(im)}" width="{im.width}" height="{im.height}" alt="{html.escape(alt)}">'


def _acc(a: Mapping) -> dict:
    """An accuracy dict checked: method, accuracy in [0, 1], n >= 1, ci95 [lo, hi] around it."""
    try:
        acc, n, (lo, hi) = float(a["accuracy"]), int(a["n"]), (float(x) for x in a["ci95"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"an accuracy entry needs method, accuracy, n and ci95 [lo, hi], got {a!r}") from e
    if not (0.0 <= lo <= acc <= hi <= 1.0) or n < 1:
        raise ValueError(f"accuracy {acc} must lie in its interval [{lo}, {hi}] within [0, 1], n >= 1; got {a!r}")
    return {"method": str(a["method"]), "accuracy": acc, "n": n, "lo": lo, "hi": hi}


def case_study_html(query_image, question: str, answer: str | None, rows: Sequence[Mapping],
                    demos: Sequence[Demo] = (), title: str = "Case study", accuracy: Sequence[Mapping] = ()) -> str:
    """One self-contained HTML document: title, demos strip, query image + question (+ reference
    answer), and a table method / output / ✓ ✗ ? / latency (ms) / LM tokens.

    Images are embedded as base64 PNG (small ones upscaled, nearest, to >= 96 px); every piece of user
    text is HTML-escaped; there is no external URL."""
    e = html.escape
    rows = [_row(r) for r in rows]
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if demos:
        parts.append(f"<h2>In-context demos ({len(demos)})</h2><div class=\"demos\">")
        for i, (img, prompt, ans) in enumerate(demos):
            parts.append(f"<figure>{_img_tag(img, f'demo {i}')}<figcaption>{e(str(prompt))}<br>"
                         f"&rarr; <b>{e(str(ans))}</b></figcaption></figure>")
        parts.append("</div>")
    ref = "<i>none</i>" if answer is None else f"<b>{e(str(answer))}</b>"
    parts += ["<h2>Query</h2>", f'<div class="query">{_img_tag(query_image, "query")}',
              f'<div><div class="q">{e(str(question))}</div><div>reference answer: {ref}</div></div></div>',
              "<h2>Outputs</h2>", "<table><thead><tr><th>method</th><th>output</th><th>correct</th>"
              "<th>latency (ms)</th><th>LM tokens</th></tr></thead><tbody>"]
    for r in rows:
        c = r["correct"]
        parts.append(f"<tr><td>{e(r['method'])}</td><td class=\"output\">{e(r['output'])}</td>"
                     f"<td class=\"mark {_MARK_CLASS[c]}\">{_MARK_TEXT[c]}</td>"
                     f"<td class=\"num\">{r['latency']}</td><td class=\"num\">{r['tokens']}</td></tr>")
    parts.append("</tbody></table>")
    if accuracy:
        accs = [_acc(a) for a in accuracy]
        parts += [f"<h2>Accuracy over held-out episodes (95% Wilson interval)</h2>",
                  "<table><thead><tr><th>method</th><th>accuracy</th><th>95% interval</th><th>episodes</th>"
                  "<th></th></tr></thead><tbody>"]
        for a in accs:
            bar = (f'<svg width="200" height="12" role="img" aria-label="{a["accuracy"]:.3f}">'
                   f'<rect x="0" y="4" width="200" height="4" fill="#e5e7eb"/>'
                   f'<rect x="{200 * a["lo"]:.1f}" y="2" width="{200 * (a["hi"] - a["lo"]):.1f}" height="8" fill="#93c5fd"/>'
                   f'<rect x="{200 * a["accuracy"] - 1:.1f}" y="0" width="2" height="12" fill="#1d4ed8"/></svg>')
            parts.append(f"<tr><td>{e(a['method'])}</td><td class=\"num\">{a['accuracy']:.3f}</td>"
                         f"<td class=\"num\">[{a['lo']:.3f}, {a['hi']:.3f}]</td><td class=\"num\">{a['n']}</td>"
                         f"<td>{bar}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- PNG


@dataclass(frozen=True)
class CaseStudyLayout:
    """Where everything goes in :func:`case_study_png`.  Boxes are (x0, y0, x1, y1), x1/y1 exclusive."""

    width: int
    height: int
    title_xy: tuple[int, int]
    demo_boxes: list[tuple[int, int, int, int]]  # one per demo: its (fitted) image
    demo_caption_xy: list[tuple[int, int]]  # first caption line (prompt); the answer line is _CAPTION_H below
    query_box: tuple[int, int, int, int]
    question_xy: tuple[int, int]  # the question line; the reference answer is one line below
    header_y: int  # the row-table header line
    columns: dict[str, int]  # x of each row column: method, output, latency, tokens
    row_y: list[int]  # top of each method row
    mark_boxes: list[tuple[int, int, int, int]]  # one filled square per row, coloured by MARK_COLORS


def case_study_layout(query_shape: Sequence[int], n_rows: int,
                      demo_shapes: Sequence[Sequence[int]] = ()) -> CaseStudyLayout:
    """The PNG layout from image shapes (H, W, ...) and the number of rows alone (text never moves it).

    Top to bottom: title, demos strip (image + prompt + answer), query image with the question at its
    right, a header line, one line per method with a coloured mark square at its left."""
    y = _M
    title_xy = (_M, y)
    y += _TITLE_H
    demo_boxes, captions = [], []
    if demo_shapes:
        y += _LINE_H  # "in-context demos" label
        for i, shape in enumerate(demo_shapes):
            x = _M + i * (_DEMO_CELL_W + _GAP)
            w, h = _fit_size(shape, _DEMO_BOX)
            demo_boxes.append((x, y, x + w, y + h))
            captions.append((x, y + _DEMO_BOX + 4))
        y += _DEMO_BOX + 4 + 2 * _CAPTION_H + _GAP
    y += _LINE_H  # "query" label
    qw, qh = _fit_size(query_shape, _QUERY_BOX)
    query_box = (_M, y, _M + qw, y + qh)
    question_xy = (_M + qw + 2 * _GAP, y)
    y += max(qh, 2 * _LINE_H) + _GAP
    width = max(_MIN_W, 2 * _M + len(demo_shapes) * (_DEMO_CELL_W + _GAP) - _GAP, 2 * _M + qw + 2 * _GAP + 400)
    header_y = y
    y += _LINE_H
    cols = {"method": _M + _MARK + 8, "output": _M + _MARK + 8 + 150, "latency": width - _M - 170,
            "tokens": width - _M - 80}
    row_y = [y + i * _LINE_H for i in range(n_rows)]
    top = (_LINE_H - _MARK) // 2
    marks = [(_M, ry + top, _M + _MARK, ry + top + _MARK) for ry in row_y]
    height = y + n_rows * _LINE_H + _M
    return CaseStudyLayout(width, height, title_xy, demo_boxes, captions, query_box, question_xy, header_y,
                           cols, row_y, marks)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def _text(s: str, font) -> str:
    """One line; the bitmap fallback font only knows latin-1."""
    s = " ".join(str(s).split())
    return s if isinstance(font, ImageFont.FreeTypeFont) else s.encode("latin-1", "replace").decode("latin-1")


def _clip(draw: ImageDraw.ImageDraw, s: str, font, max_w: int) -> str:
    """``s`` cut (with '...') to at most ``max_w`` pixels wide."""
    s = _text(s, font)
    if draw.textlength(s, font=font) <= max_w:
        return s
    while s and draw.textlength(s + "...", font=font) > max_w:
        s = s[:-1]
    return s + "..."


def case_study_png(query_image, question: str, answer: str | None, rows: Sequence[Mapping],
                   demos: Sequence[Demo] = (), title: str = "Case study", accuracy: Sequence[Mapping] = ()) -> Image.Image:
    """The case study drawn with PIL only: white RGB image laid out by :func:`case_study_layout`; one
    text line per method with a green (correct) / red (wrong) / grey (unknown) square mark; below
    it, with ``accuracy``, one line per method: accuracy, 95% interval, episodes and an interval bar."""
    card = _card_png(query_image, question, answer, rows, demos, title)
    if not accuracy:
        return card
    accs = [_acc(a) for a in accuracy]
    extra = _GAP + _LINE_H * (len(accs) + 1) + _M
    im = Image.new("RGB", (card.width, card.height + extra), "white")
    im.paste(card, (0, 0))
    draw = ImageDraw.Draw(im)
    font, dark, grey = _font(13), (31, 41, 55), (107, 114, 128)
    y = card.height + _GAP - _M
    draw.text((_M, y), "accuracy over held-out episodes (95% Wilson interval)", fill=grey, font=font)
    bar_x, bar_w = _M + 380, max(120, card.width - 2 * _M - 380)
    for i, a in enumerate(accs):
        ry = y + _LINE_H * (i + 1)
        draw.text((_M, ry), _clip(draw, a["method"], font, 150), fill=dark, font=font)
        draw.text((_M + 160, ry), f"{a['accuracy']:.3f}  [{a['lo']:.3f}, {a['hi']:.3f}]  n={a['n']}", fill=dark, font=font)
        draw.rectangle((bar_x, ry + 7, bar_x + bar_w, ry + 9), fill=(229, 231, 235))
        draw.rectangle((bar_x + round(bar_w * a["lo"]), ry + 4, bar_x + round(bar_w * a["hi"]), ry + 12), fill=(147, 197, 253))
        xa = bar_x + round(bar_w * a["accuracy"])
        draw.rectangle((xa - 1, ry + 2, xa + 1, ry + 14), fill=(29, 78, 216))
    return im


def _card_png(query_image, question: str, answer: str | None, rows: Sequence[Mapping],
              demos: Sequence[Demo] = (), title: str = "Case study") -> Image.Image:
    rows = [_row(r) for r in rows]
    lay = case_study_layout(np.asarray(query_image).shape, len(rows), [np.asarray(d[0]).shape for d in demos])
    im = Image.new("RGB", (lay.width, lay.height), "white")
    draw = ImageDraw.Draw(im)
    big, font, small = _font(18), _font(13), _font(11)
    dark, grey = (31, 41, 55), (107, 114, 128)
    draw.text(lay.title_xy, _clip(draw, title, big, lay.width - 2 * _M), fill=dark, font=big)
    if demos:
        draw.text((_M, lay.title_xy[1] + _TITLE_H), f"in-context demos ({len(demos)})", fill=grey, font=font)
    for (img, prompt, ans), box, (cx, cy) in zip(demos, lay.demo_boxes, lay.demo_caption_xy):
        im.paste(_fit(img, _DEMO_BOX), box[:2])
        draw.rectangle((box[0] - 1, box[1] - 1, box[2], box[3]), outline=(209, 213, 219))
        draw.text((cx, cy), _clip(draw, prompt, small, _DEMO_CELL_W), fill=dark, font=small)
        draw.text((cx, cy + _CAPTION_H), _clip(draw, f"-> {ans}", small, _DEMO_CELL_W), fill=dark, font=small)
    q = lay.query_box
    draw.text((_M, q[1] - _LINE_H), "query", fill=grey, font=font)
    im.paste(_fit(query_image, _QUERY_BOX), q[:2])
    draw.rectangle((q[0] - 1, q[1] - 1, q[2], q[3]), outline=(209, 213, 219))
    qx, qy = lay.question_xy
    text_w = lay.width - _M - qx
    draw.text((qx, qy), _clip(draw, f"Q: {question}", font, text_w), fill=dark, font=font)
    ref = "(none)" if answer is None else str(answer)
    draw.text((qx, qy + _LINE_H), _clip(draw, f"reference: {ref}", font, text_w), fill=dark, font=font)
    c = lay.columns
    for key, name in (("method", "method"), ("output", "output"), ("latency", "latency ms"), ("tokens", "LM tok")):
        draw.text((c[key], lay.header_y + 3), name, fill=grey, font=font)
    draw.line((_M, lay.header_y + _LINE_H - 1, lay.width - _M, lay.header_y + _LINE_H - 1), fill=(229, 231, 235))
    for r, ry, mark in zip(rows, lay.row_y, lay.mark_boxes):
        draw.rectangle((mark[0], mark[1], mark[2] - 1, mark[3] - 1), fill=MARK_COLORS[r["correct"]])
        draw.text((c["method"], ry + 3), _clip(draw, r["method"], font, c["output"] - c["method"] - 8),
                  fill=dark, font=font)
        draw.text((c["output"], ry + 3), _clip(draw, r["output"], font, c["latency"] - c["output"] - 8),
                  fill=dark, font=font)
        draw.text((c["latency"], ry + 3), r["latency"], fill=dark, font=font)
        draw.text((c["tokens"], ry + 3), r["tokens"], fill=dark, font=font)
    return im


def save_case_study(path_without_suffix: str | Path, query_image, question: str, answer: str | None,
                    rows: Sequence[Mapping], demos: Sequence[Demo] = (),
                    title: str = "Case study", accuracy: Sequence[Mapping] = ()) -> tuple[Path, Path]:
    """Write ``<path>.png`` and ``<path>.html`` (parents created); returns (png_path, html_path)."""
    base = Path(path_without_suffix)
    png, page = base.with_name(base.name + ".png"), base.with_name(base.name + ".html")
    base.parent.mkdir(parents=True, exist_ok=True)
    case_study_png(query_image, question, answer, rows, demos, title, accuracy).save(png, format="PNG")
    page.write_text(case_study_html(query_image, question, answer, rows, demos, title, accuracy), encoding="utf-8")
    return png, page
