"""A plotly figure inside a panel, as a plain ``ipywidgets.Output`` holding the figure's JSON.

Why not ``go.FigureWidget``: since plotly 6 it is an anywidget whose *every instance* syncs the whole
plotly.js bundle (``_esm``, ~5 MB) as model state.  A notebook with the Training and Attention panels
holds five of them: its saved widget state weighs ~25 MB, and when the browser restores the models
(a reload, or a notebook opened with saved widget state) each must import its 5 MB module within
anywidget's 2-second initialisation timeout ("[anywidget] Failed to initialize model"); a model that
fails is never registered, so its views read "Error displaying widget: model not found".
An Output widget is a core ipywidgets model: its state is the figure's JSON (kilobytes), JupyterLab
renders it with the plotly mime renderer, and setting its ``outputs`` trait is safe from the training
thread."""
from __future__ import annotations

import json

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def figure_bundle(fig: go.Figure) -> dict:
    """The display bundle of ``fig``: plotly's JSON (rendered by JupyterLab's plotly extension) and
    a one-line text fallback."""
    spec = json.loads(pio.to_json(fig, validate=False))  # numpy arrays -> lists
    spec["config"] = {"displaylogo": False}  # not "responsive": JupyterLab then draws the first figure 0 px high
    title = fig.layout.title.text or "figure"
    return {PLOTLY_MIME: spec, "text/plain": f"<plotly figure: {title}>"}


class FigureView:
    """A figure shown in ``widget`` (an ``Output``); ``figure`` is the :class:`go.Figure` on screen,
    ``data`` / ``layout`` read it (the same access a ``FigureWidget`` gives)."""

    def __init__(self, fig: go.Figure | None = None, *, height: int | None = None):
        self.widget = W.Output(layout=W.Layout(min_width="0"))  # as wide as its panel (no fixed px: fits 1280)
        self.figure = go.Figure()
        self.show(fig if fig is not None else go.Figure(), height=height)

    @property
    def data(self):
        return self.figure.data

    @property
    def layout(self):
        return self.figure.layout

    def show(self, fig: go.Figure, height: int | None = None) -> None:
        """Replace the figure on screen by ``fig`` (with ``height`` in pixels when given)."""
        if height is not None:
            fig.update_layout(height=height)
        self.figure = fig
        self.widget.outputs = ({"output_type": "display_data", "data": figure_bundle(fig), "metadata": {}},)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
