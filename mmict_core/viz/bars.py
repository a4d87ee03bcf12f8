"""Accuracy per method as bars with their 95% intervals and a dashed chance line (notebooks 03, 06):
one group of :func:`mmict_core.viz.curves.accuracy_intervals`, the methods along the x axis."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go

from .curves import accuracy_intervals


def accuracy_bars(rows: Sequence[Mapping], *, chance: float | None = None, chance_note: str = "chance",
                  title: str = "held-out accuracy (95% Wilson interval)") -> go.Figure:
    """One bar per row: ``rows`` of ``{"label", "accuracy", "ci95": [lo, hi]}`` (as
    :func:`mmict_core.workbench.heldout_accuracy` returns them, plus a label); error bars from the
    interval; ``chance``: a dashed horizontal line at that accuracy, annotated with ``chance_note``."""
    results = {str(r["label"]): {"accuracy": (float(r["accuracy"]), float(r["ci95"][0]), float(r["ci95"][1]))}
               for r in rows}  # each method its own x position, one series
    fig = accuracy_intervals(results, title=title)
    if chance is not None:
        fig.add_hline(y=float(chance), line_dash="dash", line_color="grey",
                      annotation_text=f"{chance_note} {chance:g}", annotation_position="top left")
    fig.update_layout(yaxis_title="accuracy", showlegend=False, height=380)
    fig.update_xaxes(type="category")
    return fig
