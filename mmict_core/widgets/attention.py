"""The attention explorer: where a HiFICL adapter's attention goes on the session's episode.

"Show" captures the attention split once (:meth:`Session.attention`, i.e. the adapter's own
attention function with its capture flag) and the token × token attention (:meth:`Session.token_attention`);
the layer / head sliders then re-draw the views from those arrays without running the model again."""
from __future__ import annotations

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go

from .. import viz
from ..inspect.token_attention import TokenAttention
from ..inspect.virtual_kv import VirtualKVAttention
from ..workbench import Session, attention_adapters, attention_methods
from ._common import Panel, set_figure
from ._figure import FigureView

FIGURE_HEIGHT = 360  # px
TOKEN_MAP_HEIGHT = 480  # px


def head_view_figure(att: VirtualKVAttention, layer: int, head: int) -> go.Figure:
    """Bar per token (image bands collapsed to their mean) of the virtual-key share of one head:
    layer ``layer`` (or the mean over layers when ``layer`` < 0)."""
    vm = att.virtual_mass[layer, head] if layer >= 0 else att.virtual_mass[:, head].mean(axis=0)  # (T,)
    values, labels = viz.collapse_image_bands(vm, att.roles, att.items, att.labels)  # (T',)
    where = f"layer {layer}" if layer >= 0 else "mean over layers"
    fig = go.Figure(go.Bar(x=labels, y=values, marker_color="#1f77b4",
                           hovertemplate="%{x}<br>virtual share %{y:.4f}<extra></extra>"))
    fig.update_layout(title=f"Attention share on the virtual K/V slots per token: {where}, head {head}",
                      xaxis_title="token (image bands collapsed)", yaxis_title="virtual share", template="plotly_white",
                      yaxis_range=[0, 1])
    fig.update_xaxes(type="category", tickangle=-60)
    return fig


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True in ``mask``."""
    out, start = [], None
    for i, m in enumerate(list(mask) + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def token_map_figure(tok: TokenAttention, layer: int, head: int) -> go.Figure:
    """Heatmap of one head's attention, query position (row) x key position (column): layer ``layer``
    (or the mean over layers when ``layer`` < 0).  Hover names both tokens; image tokens are shaded."""
    w = tok.weights[layer, head] if layer >= 0 else tok.weights[:, head].mean(axis=0)  # (T, T)
    T = w.shape[0]
    names = [f"{p} {lab}" for p, lab in enumerate(tok.labels)]  # unique: a word may occur twice
    pairs = [[[names[i], names[j]] for j in range(T)] for i in range(T)]  # (T, T, 2)
    fig = go.Figure(go.Heatmap(z=w, x=list(range(T)), y=list(range(T)), customdata=pairs, colorscale="Blues", zmin=0,
                               colorbar=dict(thickness=10),
                               hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>attention %{z:.4f}"
                                             "<extra></extra>"))
    for s, e in _runs(tok.roles == "image"):  # image tokens: a band on both axes
        fig.add_vrect(x0=s - 0.5, x1=e - 0.5, fillcolor="orange", opacity=0.15, line_width=0)
        fig.add_hrect(y0=s - 0.5, y1=e - 0.5, fillcolor="orange", opacity=0.15, line_width=0)
    where = f"layer {layer}" if layer >= 0 else "mean over layers"
    rows = "; rows sum to α, the rest is on the virtual slots" if tok.virtual_mass is not None else ""
    fig.update_layout(title=dict(text=f"Token × token attention: {where}, head {head}<br><sup>image tokens shaded{rows}</sup>"),
                      template="plotly_white", margin=dict(l=10, r=10, t=60, b=10))
    ticks = dict(tickmode="array", tickvals=list(range(T)), ticktext=names, tickfont=dict(size=9))
    fig.update_xaxes(title="key", tickangle=-60, **ticks)
    fig.update_yaxes(title="query position", autorange="reversed", **ticks)
    return fig


class AttentionExplorer(Panel):
    """Explore a HiFICL adapter's virtual key/value attention on the session's current episode.

    Widgets: ``adapter`` (Dropdown over the session's HiFICL adapters), ``refresh_button``,
    ``show_button``; ``layer`` (IntSlider, -1 = every layer) and ``head`` (IntSlider);
    ``positions`` ("query" or "all": what the layer x head grid and the slot view average over);
    figures (:class:`FigureView`): ``grid`` (layer x head),
    ``per_token`` (rows = layers, or the heads of the chosen layer), ``head_view`` (one head, per
    token) beside ``token_map`` (one head, token x token), ``slots`` (layer x virtual slot); ``status``.
    State: ``attention`` (the captured :class:`~mmict_core.inspect.virtual_kv.VirtualKVAttention`) and
    ``tokens`` (:class:`~mmict_core.inspect.token_attention.TokenAttention`).
    """

    def __init__(self, session: Session):
        self.session = session
        self.attention: VirtualKVAttention | None = None
        self.tokens: TokenAttention | None = None
        style = {"description_width": "initial"}
        self.adapter = W.Dropdown(options=[], description="adapter", style=style)
        self.refresh_button = W.Button(description="Refresh adapters", icon="refresh")
        self.show_button = W.Button(description="Show attention", button_style="primary", icon="eye")
        self.layer = W.IntSlider(value=-1, min=-1, max=0, description="layer (-1 = all)", style=style)
        self.head = W.IntSlider(value=0, min=0, max=0, description="head", style=style)
        self.positions = W.ToggleButtons(options=["query", "all"], value="query", description="average over",
                                         style=style)
        self.status = W.HTML()
        self.grid, self.per_token, self.head_view, self.slots = (FigureView(height=FIGURE_HEIGHT) for _ in range(4))
        self.token_map = FigureView(height=TOKEN_MAP_HEIGHT)
        for fv in (self.grid, self.slots, self.head_view, self.token_map):  # two per row, sharing it (fits 1280 px)
            fv.widget.layout = W.Layout(flex="1 1 0%", min_width="0", width="auto")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.show_button.on_click(lambda _: self.show())
        self.layer.observe(lambda _: self.redraw(), names="value")
        self.head.observe(lambda _: self.redraw(), names="value")
        self.positions.observe(lambda _: self.redraw(), names="value")
        self.widget = W.VBox([W.HBox([self.adapter, self.refresh_button, self.show_button]),
                              W.HBox([self.layer, self.head, self.positions]), self.status,
                              W.HBox([self.grid.widget, self.slots.widget]), self.per_token.widget,
                              W.HBox([self.head_view.widget, self.token_map.widget])])
        self.refresh()

    def refresh(self) -> None:
        """Offer the session's adapters that capture their attention (the newest selected when the
        choice is gone)."""
        names = attention_adapters(self.session.adapters)
        keep = self.adapter.value if self.adapter.value in names else (names[-1] if names else None)
        self.adapter.options = names
        self.adapter.value = keep

    def show(self) -> VirtualKVAttention | None:
        """What the Show button does: capture the attention on the current episode and draw it."""
        if not self.adapter.value:
            self._say(f"no adapter with virtual key/value slots ({', '.join(attention_methods())}) in this session: "
                      f"train one (Training panel) or load one", "error")
            return None
        ok, att = self._on_model(self.session.attention, self.adapter.value)
        if not ok:
            return None
        ok, tok = self._on_model(self.session.token_attention, self.adapter.value)
        if not ok:
            return None
        self.attention, self.tokens = att, tok
        L, H, T, n = att.shape
        self.layer.max, self.head.max = L - 1, H - 1
        self._say(f"{self.adapter.value}: {L} layers x {H} heads, {T} positions, {n} virtual slots", "ok")
        self.redraw()
        return att

    def query_positions(self) -> list[int]:
        """Positions of the query item (the episode's last item) in the captured sequence."""
        items = self.attention.items
        return [i for i, it in enumerate(items) if it == int(items.max())]

    def redraw(self) -> None:
        """Draw the views from the captured arrays for the current slider values (no model call)."""
        att = self.attention
        if att is None:
            return
        L, H = att.shape[:2]
        layer = min(int(self.layer.value), L - 1)
        head = min(int(self.head.value), H - 1)
        pos = self.query_positions() if self.positions.value == "query" else None
        set_figure(self.grid, viz.virtual_mass_grid(att.virtual_mass, pos), height=FIGURE_HEIGHT)
        set_figure(self.slots, viz.slot_weights_figure(att.slot_weights, pos), height=FIGURE_HEIGHT)
        set_figure(self.per_token, viz.virtual_mass_per_token(att.virtual_mass, att.roles, att.items, att.labels,
                                                              layer=None if layer < 0 else layer), height=FIGURE_HEIGHT)
        set_figure(self.head_view, head_view_figure(att, layer, head), height=FIGURE_HEIGHT)
        if self.tokens is not None:
            set_figure(self.token_map, token_map_figure(self.tokens, layer, head), height=TOKEN_MAP_HEIGHT)

    def head_values(self) -> tuple[np.ndarray, list[str]]:
        """(values, labels) the head view shows now."""
        return np.asarray(self.head_view.data[0].y, dtype=np.float64), list(self.head_view.data[0].x)
