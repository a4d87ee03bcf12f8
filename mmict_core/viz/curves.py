"""Training and evaluation curves: a smoothed loss curve and accuracy against the number of shots.

Plain numbers in, a ``plotly.graph_objects.Figure`` out; no model code.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

__all__ = ["ema", "loss_curve", "accuracy_vs_shots"]


def ema(values: Sequence[float], smoothing: float = 0.9) -> np.ndarray:
    """Exponential moving average: ``ema_0 = x_0``, ``ema_t = s * ema_{t-1} + (1 - s) * x_t``.

    values: (n,) -> (n,) float64; ``smoothing`` s in [0, 1) (0 = no smoothing)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    x = np.asarray(values, dtype=np.float64).reshape(-1)  # (n,)
    out = np.empty_like(x)  # (n,)
    for t, v in enumerate(x):
        out[t] = v if t == 0 else smoothing * out[t - 1] + (1.0 - smoothing) * v
    return out


def loss_curve(losses: Sequence[float], *, title: str = "training loss", smoothing: float = 0.9) -> go.Figure:
    """Raw loss per step (thin, translucent) and its EMA (``smoothing``) against step 1..n.

    losses: (n,).  With no points the figure has its axes and no traces."""
    y = np.asarray(losses, dtype=np.float64).reshape(-1)  # (n,)
    steps = np.arange(1, len(y) + 1)  # (n,)
    fig = go.Figure()
    if len(y):
        mode = "lines" if len(y) > 1 else "markers"
        fig.add_trace(go.Scatter(x=steps, y=y, mode=mode, name="loss", opacity=0.35,
                                 line=dict(width=1, color="#1f77b4"),
                                 hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=steps, y=ema(y, smoothing), mode=mode, name=f"EMA ({smoothing:g})",
                                 line=dict(width=2.5, color="#1f77b4"),
                                 hovertemplate="step %{x}<br>EMA %{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss", template="plotly_white")
    if len(y) <= 1:  # give an empty or one-point figure a visible range instead of autoscale on nothing
        fig.update_xaxes(range=[0, 2])
    return fig


def accuracy_vs_shots(results: Mapping[str, Mapping[int, float]], *,
                      chance: float | Mapping[str, float] | None = None,
                      title: str = "accuracy vs. number of shots", value: str = "accuracy", fmt: str = ".3f",
                      errors: Mapping[str, Mapping[int, tuple[float, float]]] | None = None) -> go.Figure:
    """One line per series label: x = shots (sorted), y = ``value`` (default accuracy).

    results: ``{label: {shots: y}}``; ``chance``: a dashed horizontal line at that accuracy, or
    ``{label: chance}`` for one dashed line per distinct level, annotated with the labels it serves;
    ``value`` / ``fmt``: the y axis title and the hover's name and number format (``".0f"`` for
    tokens); ``errors``: ``{label: {shots: (lo, hi)}}`` drawn as asymmetric error bars (e.g. a 95%
    interval, or the min..max of repeated timings)."""
    fig = go.Figure()
    for label, by_shots in results.items():
        shots = sorted(by_shots)
        y = [float(by_shots[k]) for k in shots]  # (n_shots,)
        err = None
        if errors and label in errors:
            lo_hi = [errors[label].get(k, (v, v)) for k, v in zip(shots, y)]
            err = dict(type="data", symmetric=False, array=[max(hi - v, 0.0) for (_, hi), v in zip(lo_hi, y)],
                       arrayminus=[max(v - lo, 0.0) for (lo, _), v in zip(lo_hi, y)])
        fig.add_trace(go.Scatter(x=shots, y=y, mode="lines+markers", name=str(label), error_y=err,
                                 hovertemplate=f"%{{fullData.name}}<br>%{{x}} shots<br>{value} %{{y:{fmt}}}<extra></extra>"))
    if isinstance(chance, Mapping):
        levels: dict[float, list[str]] = {}
        for label, c in chance.items():
            levels.setdefault(round(float(c), 6), []).append(str(label))
        for c, labels in levels.items():
            fig.add_hline(y=c, line_dash="dash", line_color="grey",
                          annotation_text=f"chance {', '.join(labels)} {c:g}", annotation_position="bottom right")
    elif chance is not None:
        fig.add_hline(y=float(chance), line_dash="dash", line_color="grey",
                      annotation_text=f"chance {chance:g}", annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title="shots", yaxis_title=value, template="plotly_white")
    fig.update_xaxes(tickmode="array", tickvals=sorted({k for r in results.values() for k in r}))
    return fig
