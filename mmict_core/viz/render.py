"""How figures leave the kernel: the plotly renderer the notebooks use, and a figure's display
bundle.

``plotly_mimetype+notebook_connected``: JupyterLab draws plotly's JSON mimetype (offline, and it
stores a PNG beside it when the notebook is saved); the ``text/html`` part carries the figure's data
and a ``Plotly.newPlot`` call that loads plotly.js from its CDN, which is what nbconvert's HTML
export shows (an export otherwise drops every plotly figure: it cannot render the JSON mimetype).
``notebook`` (not connected) would inline the 5 MB plotly.js; PNG needs kaleido and a browser."""
from __future__ import annotations

import json

import plotly.graph_objects as go
import plotly.io as pio

NOTEBOOK_RENDERER = "plotly_mimetype+notebook_connected"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def use_notebook_renderer() -> str:
    """Make ``fig.show()`` emit both plotly's JSON and HTML (see the module doc); returns the name."""
    pio.renderers.default = NOTEBOOK_RENDERER
    return NOTEBOOK_RENDERER


def figure_bundle(fig: go.Figure) -> dict:
    """The display bundle ``fig.show()`` would emit under :data:`NOTEBOOK_RENDERER` (JSON + HTML),
    plus a one-line text fallback, built without publishing anything (e.g. for an Output widget)."""
    spec = json.loads(pio.to_json(fig, validate=False))  # numpy arrays -> lists
    # not "responsive": JupyterLab's plotly renderer then draws the first figure of a page 0 px high
    spec["config"] = {"displaylogo": False}
    html = pio.renderers["notebook_connected"].to_mimebundle(spec)["text/html"]
    title = fig.layout.title.text or "figure"
    return {PLOTLY_MIME: spec, "text/html": html, "text/plain": f"<plotly figure: {title}>"}
