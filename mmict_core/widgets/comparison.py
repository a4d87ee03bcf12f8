"""The side-by-side comparison: plain ICL with the picked demonstrations and every adapter of the
session, on the *same* episode (:meth:`Session.compare`), shown as a table and as the case-study
page of :func:`mmict_core.viz.case_study_html`."""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from .. import viz
from ..workbench import CompareRow, Session
from ._common import Panel

_MARK = {True: "✓", False: "✗", None: "?"}


def rows_table_html(rows: list[CompareRow]) -> str:
    """The comparison rows as an HTML table (method, shots, output, correct, latency, LM tokens)."""
    head = "".join(f"<th style='padding:2px 8px;text-align:left'>{h}</th>"
                   for h in ("method", "shots", "output", "correct", "latency (ms)", "LM tokens"))
    body = []
    for r in rows:
        out = html.escape(r.output) if not r.error else f"<i>(not run: {html.escape(r.error)})</i>"
        cells = (html.escape(r.method), r.shots, out, _MARK[r.correct], f"{r.latency_ms:.1f}", r.lm_tokens)
        body.append("<tr>" + "".join(f"<td style='padding:2px 8px'>{c}</td>" for c in cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class ComparisonPanel(Panel):
    """Run several methods on the session's current episode.

    Widgets: ``methods`` (SelectMultiple over "ICL", the other training-free methods and the session's adapters), ``max_new_tokens``
    (0 = the task's own limit), ``refresh_button`` (re-read the session's adapters), ``run_button``,
    ``table`` (HTML), ``case_study`` (HTML: the case-study page in an iframe), ``status``.
    State: ``rows`` (the last :class:`CompareRow` list), ``case_study_document`` (its HTML page).
    """

    def __init__(self, session: Session, *, height: int = 520):
        self.session = session
        self.height = int(height)
        self.rows: list[CompareRow] = []
        self.case_study_document = ""
        self._case: tuple | None = None  # the case study's arguments, fixed when the comparison ran
        style = {"description_width": "initial"}
        self.methods = W.SelectMultiple(options=[], description="methods", style=style, rows=6)
        self.max_new_tokens = W.BoundedIntText(value=0, min=0, max=256, description="max new tokens (0 = task's)",
                                               style=style, layout=W.Layout(width="240px"))
        self.refresh_button = W.Button(description="Refresh methods", icon="refresh")
        # adapters of the session's library and the starter library, loaded on demand
        self.library = W.Dropdown(options=[], description="library", style=style, layout=W.Layout(width="320px"))
        self.load_button = W.Button(description="Load into compare", icon="download")
        self.load_button.on_click(lambda _: self.load())
        self.run_button = W.Button(description="Compare", button_style="primary", icon="play")
        self.table = W.HTML()
        self.case_study = W.HTML()
        self.status = W.HTML()
        self.refresh_button.on_click(lambda _: self.refresh())
        self.run_button.on_click(lambda _: self.run())
        self.widget = W.VBox([W.HBox([self.methods, W.VBox([self.max_new_tokens, self.refresh_button, self.run_button])]),
                              W.HBox([self.library, self.load_button]),
                              self.status, self.table, self.case_study])
        self.refresh()

    def refresh(self) -> None:
        """Offer "ICL", the other training-free methods and every adapter of the session; keep the
        choice, select newcomers."""
        before, chosen = set(self.methods.options), set(self.methods.value)
        options = self.session.method_labels()
        self.methods.options = options
        self.methods.value = [o for o in options if o in chosen or o not in before]
        self.library.options = self.session.library_choices()

    def load(self) -> str | None:
        """What "Load into compare" does: the chosen library entry becomes one of the methods."""
        name = self.library.value
        if not name:
            self._say("choose a library entry to load", "error")
            return None
        ok, _ = self._on_model(self.session.load_from_library, name)
        if not ok:
            return None
        self.refresh()
        self._say(f"loaded {name}: it is now among the methods", "ok")
        return name

    def run(self) -> list[CompareRow]:
        """What the Compare button does."""
        labels = list(self.methods.value)
        if not labels:
            self._say("choose at least one method to compare", "error")
            return []
        ok, rows = self._on_model(self.session.compare, labels, max_new_tokens=int(self.max_new_tokens.value) or None)
        if not ok:
            return []
        self.rows = rows
        self.table.value = rows_table_html(rows)
        s = self.session
        demos = [(d.images[0], d.prompt, d.answer) for d in s.demos]
        self._case = (s.query.images[0], s.query.prompt, s.query.answer or None,
                      [r.as_dict() for r in rows if not r.error], demos, f"{s.task}: {len(demos)} demonstration(s)")
        self.case_study_document = viz.case_study_html(*self._case)
        self.case_study.value = (f'<iframe srcdoc="{html.escape(self.case_study_document, quote=True)}" '
                                 f'style="width:100%;height:{self.height}px;border:1px solid #e5e7eb"></iframe>')
        failed = [r.method for r in rows if r.error]
        scored = [r for r in rows if r.correct is not None]
        right = sum(bool(r.correct) for r in scored)
        msg = f"{len(rows)} method(s) on one episode ({s.episode().k} demos)"
        if scored:
            msg += f"; {right} of {len(scored)} match the reference"
        if failed:
            msg += f"; not run: {', '.join(failed)}"
        self._say(msg, "error" if failed else "ok")
        return rows

    def save(self, path_without_suffix: str | Path) -> tuple[Path, Path]:
        """Write the last case study as ``<path>.png`` and ``<path>.html``."""
        if self._case is None:
            raise ValueError("run the comparison first: there is no case study to save")
        return viz.save_case_study(path_without_suffix, *self._case)
