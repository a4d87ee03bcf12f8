"""Accuracy per method as bars with their 95% intervals and a dashed chance line (notebooks 03, 06)."""
from __future__ import annotations

from typing import Mapping, Sequence

import plotly.graph_objects as go


def accuracy_bars(rows: Sequence[Mapping], *, chance: float | None = None, chance_note: str = "chance",
                  title: str = "held-out accuracy (95% Wilson interval)") -> go.Figure:
    """One bar per row: ``rows`` of ``{"label", "accuracy", "ci95": [lo, hi]}`` (as
    :func:`mmict_core.workbench.heldout_accuracy` returns them, plus a label); error bars from the
    interval; ``chance``: a dashed horizontal line at that accuracy, annotated with ``chance_note``."""
    labels = [str(r["label"]) for r in rows]
    acc = [float(r["accuracy"]) for r in rows]
    lo = [float(r["ci95"][0]) for r in rows]
    hi = [float(r["ci95"][1]) for r in rows]
    fig = go.Figure(go.Bar(
        x=labels, y=acc, marker_color="#1f77b4",
        error_y=dict(type="data", symmetric=False, array=[h - a for a, h in zip(acc, hi)],
                     arrayminus=[a - l for a, l in zip(acc, lo)]),
        customdata=list(zip(lo, hi)),
        hovertemplate="%{x}<br>accuracy %{y:.3f}<br>95% interval [%{customdata[0]:.3f}, %{customdata[1]:.3f}]<extra></extra>"))
    if chance is not None:
        fig.add_hline(y=float(chance), line_dash="dash", line_color="grey",
                      annotation_text=f"{chance_note} {chance:g}", annotation_position="top left")
    fig.update_layout(title=title, yaxis_title="accuracy", yaxis_range=[0, 1.05], template="plotly_white",
                      height=380, width=None)
    fig.update_xaxes(type="category")
    return fig
