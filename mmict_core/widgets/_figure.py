"""A plotly figure inside a panel, as a plain ``ipywidgets.Output`` holding the figure's display bundle.

Why not ``go.FigureWidget``: since plotly 6 it is an anywidget whose *every instance* syncs the whole
plotly.js bundle (``_esm``, ~5 MB) as model state.  The Training and Attention panels held five: a
notebook saved with its widget state (what keeps widgets visible once the kernel is gone: the
"model not found" after a reload of a notebook whose kernel ended) weighed 25-51 MB, and on a
restore each model must import its 5 MB module within anywidget's 2-second initialisation timeout
("[anywidget] Failed to initialize model" when it does not).
An Output widget is a core ipywidgets model: its state is the figure's JSON and HTML (kilobytes,
:func:`mmict_core.viz.figure_bundle`), JupyterLab renders it with the plotly mime renderer, an
nbconvert HTML export with the HTML, and setting its ``outputs`` trait is safe from the training
thread."""
from __future__ import annotations

import ipywidgets as W
import plotly.graph_objects as go

from ..viz.render import figure_bundle


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
