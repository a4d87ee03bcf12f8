"""Figures survive an nbconvert HTML export: a small notebook that sets the notebooks' renderer
(:func:`mmict_core.viz.use_notebook_renderer`), shows a figure with ``fig.show()`` and one inside a
panel's :class:`~mmict_core.widgets.FigureView`, is executed (nbclient, this interpreter's kernel)
and exported with nbconvert.  Each figure's data must be in the HTML with a ``Plotly.newPlot`` call,
and (when Chromium is here) the exported page must draw the shown figure, with plotly.js served
from the local plotly package in place of its CDN (this machine is offline)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from _helpers import interpreter_kernel

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SHOWN, IN_PANEL = 31415, 16180  # distinctive values to find each figure's data by

CELLS = [
    "import plotly.graph_objects as go\nfrom mmict_core import viz\nviz.use_notebook_renderer()",
    f"go.Figure(go.Bar(x=['a', 'b'], y=[{SHOWN}, 2])).update_layout(title='shown').show()",
    f"from mmict_core.widgets import FigureView\nFigureView(go.Figure(go.Scatter(y=[{IN_PANEL}, 1]))).widget",
]
# the notebooks that show figures with fig.show() set the renderer first
SHOWING = ["01_icl", "02_mmict", "03_hificl", "04_m2iv_vlibrary", "05_quantisation", "06_vectors"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    base = tmp_path_factory.mktemp("html")
    with interpreter_kernel(base, "mmict-html-test", "MMICT (html test)") as kernel:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
        NotebookClient(nb, timeout=300, kernel_name=kernel, resources={"metadata": {"path": str(ROOT)}}).execute()
    html, _ = HTMLExporter().from_notebook_node(nb)
    path = base / "small.html"
    path.write_text(html)
    return nb, html, path


def test_the_notebooks_that_show_figures_set_the_renderer():
    for name in SHOWING:
        nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert ".show()" in code and "use_notebook_renderer()" in code, name
        first_show = code.index(".show()")
        assert code.index("use_notebook_renderer()") < first_show, f"{name}: the renderer is set after a figure is shown"


def test_export_contains_every_figure(exported):
    nb, html, _ = exported
    # fig.show() emits both: JupyterLab draws the JSON, the export the HTML (after the renderer's
    # one-off set-up output)
    assert any({"application/vnd.plotly.v1+json", "text/html"} <= set(o.get("data", {})) for o in nb.cells[1].outputs)
    # the shown figure: a Plotly.newPlot with its data, in the page itself
    calls = [html[m.end():m.end() + 4000] for m in re.finditer(r"Plotly\.newPlot\(", html)]
    assert any(f"{SHOWN}" in c for c in calls), "the shown figure is not in the exported HTML"
    # the panel's figure: in the widget state embedded in the page, as JSON and as HTML
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    outputs = [m["state"]["outputs"] for m in state.values() if m["model_name"] == "OutputModel"]
    bundles = [o["data"] for out in outputs for o in out]
    assert any(str(IN_PANEL) in b["text/html"] and "Plotly.newPlot" in b["text/html"] for b in bundles)
    assert any(b["application/vnd.plotly.v1+json"]["data"][0]["y"][0] == IN_PANEL for b in bundles)
    assert "application/vnd.jupyter.widget-state+json" in html and str(IN_PANEL) in html
    size = len(json.dumps(state))
    assert size < 200_000, f"the widget state weighs {size:,} bytes"


def test_exported_page_draws_the_figure(exported):
    if not Path(CHROMIUM).exists():  # CI installs Chromium (.ci/run): there it must run, never skip
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} not found — CI must run the browser check")
        pytest.skip(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed")
    import plotly

    _, _, path = exported
    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"

    def route(r):
        if r.request.url.startswith("https://cdn.plot.ly/"):
            r.fulfill(path=str(plotly_js), content_type="application/javascript",
                      headers={"Access-Control-Allow-Origin": "*"})
        elif r.request.url.startswith("file://"):
            r.continue_()
        else:  # offline: MathJax, require.js, the widget manager
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.route("**/*", route)
            page.goto(path.as_uri())
            plot = page.locator(".js-plotly-plot").filter(has_text="shown")
            plot.first.wait_for(timeout=60_000)
            assert plot.first.locator(".main-svg").count() >= 1
            assert plot.first.locator(".bars .point").count() == 2  # both bars drawn
        finally:
            browser.close()
