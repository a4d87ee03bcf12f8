"""Where a HiFICL adapter's attention goes: the share on its virtual key/value slots.

Inputs are the plain arrays of one episode's attention split (L layers, H heads, T positions,
n virtual slots):

- ``virtual_mass`` (L, H, T): share of attention on the virtual keys (``1 - alpha``);
- ``slot_weights`` (L, H, T, n): share of each virtual slot (sums over n to ``virtual_mass``);
- ``roles`` (T,) str ('bos', 'prompt', 'image', 'marker', 'answer', ...), ``items`` (T,) int
  (demos 0..k-1, the query k = the largest item, -1 for BOS), ``labels`` (T,) str.

Image segments are long runs of near-identical ``<img j>`` tokens, so the per-token view collapses
each into one column (its mean).  No model code here: numpy in, plotly out.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

__all__ = ["collapse_image_bands", "virtual_mass_grid", "virtual_mass_per_token", "slot_weights_figure"]

_HOVER_VALUE = "%{z:.4f}"
_BAND_COLOR = "#d62728"


@dataclass(frozen=True)
class _Column:
    """One column of the collapsed token axis: positions ``start..stop-1`` (one unless an image band)."""

    start: int
    stop: int
    label: str  # unique: "<first position> <text>"
    role: str
    is_image: bool


def _clean(text: str) -> str:
    """A token's text on one line (newlines and tabs made visible)."""
    return str(text).replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def _columns(roles: Sequence[str], items: Sequence[int], labels: Sequence[str]) -> list[_Column]:
    """Group positions into columns: each maximal run of role 'image' with one item is one column."""
    roles, items, labels = list(map(str, roles)), [int(i) for i in items], list(labels)
    if not len(roles) == len(items) == len(labels):
        raise ValueError(f"roles, items, labels differ in length: {len(roles)}, {len(items)}, {len(labels)}")
    query = max(items, default=-1)
    cols, p = [], 0
    while p < len(roles):
        if roles[p] == "image":
            q = p
            while q < len(roles) and roles[q] == "image" and items[q] == items[p]:
                q += 1  # [p, q) is one image band
            who = "query" if items[p] == query else f"demo {items[p]}"
            span = f"{p}" if q - p == 1 else f"{p}-{q - 1}"
            cols.append(_Column(p, q, f"{span} [image: {who}]", "image", True))
            p = q
        else:
            cols.append(_Column(p, p + 1, f"{p} {_clean(labels[p])}", roles[p], False))
            p += 1
    return cols


def _collapse(values: np.ndarray, cols: list[_Column]) -> np.ndarray:
    """values (..., T) -> (..., T'): the mean over each column's positions."""
    if not cols:
        return values[..., :0]  # (..., 0)
    return np.stack([values[..., c.start:c.stop].mean(axis=-1) for c in cols], axis=-1)  # (..., T')


def collapse_image_bands(values, roles: Sequence[str], items: Sequence[int],
                         labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Collapse each image band (a maximal run of role 'image' with the same item) into one column.

    values (..., T) -> (values (..., T'), labels' (T',)).  A band's value is its mean over the run,
    labelled ``"<first>-<last> [image: demo i]"`` or ``"... [image: query]"`` (query = the largest
    item); every other position keeps its label as ``"<position> <text>"``, so labels are unique."""
    values = np.asarray(values, dtype=np.float64)  # (..., T)
    if values.ndim == 0 or values.shape[-1] != len(roles):
        raise ValueError(f"values' last axis {values.shape[-1:]} != T = {len(roles)}")
    cols = _columns(roles, items, labels)
    return _collapse(values, cols), [c.label for c in cols]


def _check(a, ndim: int, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes, got shape {a.shape}")
    return a


def _positions(positions: Sequence[int] | None, T: int) -> tuple[np.ndarray, str]:
    """Selected positions (m,) int and a phrase for titles."""
    if positions is None:
        return np.arange(T), f"all {T} positions"
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)  # (m,)
    if pos.size == 0:
        raise ValueError("positions is empty")
    if pos.min() < -T or pos.max() >= T:
        raise IndexError(f"positions out of range for T = {T}")
    shown = ", ".join(map(str, pos[:8])) + (", ..." if pos.size > 8 else "")
    return pos, f"{pos.size} selected position{'s' * (pos.size != 1)} ({shown})"


def virtual_mass_grid(virtual_mass, positions: Sequence[int] | None = None) -> go.Figure:
    """Heatmap layer x head of the virtual-key attention share, averaged over ``positions`` (default all).

    virtual_mass (L, H, T) -> z (L, H); rows L0.. top-down, columns H0..; colour range [0, 1]."""
    vm = _check(virtual_mass, 3, "virtual_mass")  # (L, H, T)
    L, H, T = vm.shape
    pos, what = _positions(positions, T)
    z = vm[:, :, pos].mean(axis=-1)  # (L, H, m) -> (L, H)
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"H{h}" for h in range(H)], y=[f"L{l}" for l in range(L)], zmin=0.0, zmax=1.0,
        colorscale="Viridis", colorbar=dict(title="virtual<br>share"),
        hovertemplate=f"layer %{{y}}<br>head %{{x}}<br>virtual mass {_HOVER_VALUE}<extra></extra>"))
    fig.update_layout(title=f"Attention share on virtual K/V slots: mean over {what}",
                      xaxis_title="head", yaxis_title="layer", template="plotly_white")
    fig.update_yaxes(autorange="reversed")
    return fig


def virtual_mass_per_token(virtual_mass, roles: Sequence[str], items: Sequence[int], labels: Sequence[str],
                           *, layer: int | None = None) -> go.Figure:
    """Heatmap of the virtual-key share per token, image bands collapsed to one column each.

    virtual_mass (L, H, T).  ``layer=None``: rows = layers, value = mean over heads, z (L, T');
    ``layer=l``: rows = the heads of layer l, z (H, T').  Image-band columns get a bold tick label
    and an outline."""
    vm = _check(virtual_mass, 3, "virtual_mass")  # (L, H, T)
    L, H, T = vm.shape
    cols = _columns(roles, items, labels)
    if len(roles) != T:
        raise ValueError(f"virtual_mass has T = {T} positions but roles has {len(roles)}")
    if layer is None:
        per_row, rows, what = vm.mean(axis=1), [f"L{l}" for l in range(L)], "mean over heads, per layer"  # (L, T)
    else:
        if not -L <= layer < L:
            raise IndexError(f"layer {layer} out of range for L = {L}")
        layer = layer % L
        per_row, rows, what = vm[layer], [f"H{h}" for h in range(H)], f"layer {layer}, per head"  # (H, T)
    z = _collapse(per_row, cols)  # (rows, T')
    x = [c.label for c in cols]
    shown = [f"<b>{html.escape(c.label)}</b>" if c.is_image else html.escape(c.label) for c in cols]
    hover = [f"{html.escape(c.label)} ({c.role}"
             + (f", mean of {c.stop - c.start} positions)" if c.stop - c.start > 1 else ")") for c in cols]
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=rows, zmin=0.0, zmax=1.0, colorscale="Viridis", colorbar=dict(title="virtual<br>share"),
        customdata=[hover] * len(rows),
        hovertemplate=f"%{{y}}<br>%{{customdata}}<br>virtual mass {_HOVER_VALUE}<extra></extra>"))
    for i, c in enumerate(cols):
        if c.is_image:  # outline the band's column across all rows
            fig.add_shape(type="rect", xref="x", yref="paper", x0=i - 0.5, x1=i + 0.5, y0=0, y1=1,
                          line=dict(color=_BAND_COLOR, width=2), fillcolor="rgba(0,0,0,0)")
    fig.update_layout(title=f"Attention share on virtual K/V slots per token ({what})",
                      xaxis_title="token (image bands collapsed)", yaxis_title="layer" if layer is None else "head",
                      template="plotly_white")
    fig.update_xaxes(type="category", tickmode="array", tickvals=x, ticktext=shown, tickangle=-60)
    fig.update_yaxes(autorange="reversed")
    return fig


def slot_weights_figure(slot_weights, positions: Sequence[int] | None = None) -> go.Figure:
    """Heatmap layer x virtual slot: each slot's attention share, mean over heads and ``positions``.

    slot_weights (L, H, T, n) -> z (L, n); rows L0.. top-down, columns S0.."""
    w = _check(slot_weights, 4, "slot_weights")  # (L, H, T, n)
    L, H, T, n = w.shape
    pos, what = _positions(positions, T)
    z = w[:, :, pos, :].mean(axis=(1, 2))  # (L, H, m, n) -> (L, n)
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"S{s}" for s in range(n)], y=[f"L{l}" for l in range(L)], zmin=0.0,
        colorscale="Viridis", colorbar=dict(title="slot<br>share"),
        hovertemplate=f"layer %{{y}}<br>slot %{{x}}<br>weight {_HOVER_VALUE}<extra></extra>"))
    fig.update_layout(title=f"Attention share per virtual slot: mean over heads and {what}",
                      xaxis_title="virtual slot", yaxis_title="layer", template="plotly_white")
    fig.update_yaxes(autorange="reversed")
    return fig
