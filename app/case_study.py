"""The app's Case study tab: the MMICT paper's Figure 3 on first open.

A case-study type is chosen (VQA by default), its query and k demonstrations are already drawn
(held-out test episode ``index``); one click runs VanillaFT, VanillaICT and MMICT from the starter
library (plus plain ICL and any other method picked) on that query, and scores each over N held-out
episodes with a 95% interval.  The card (PNG + HTML) carries both.  A thin face over
:mod:`mmict_core.casestudy`; nothing is trained here.
"""
from __future__ import annotations

import tempfile
import weakref
from pathlib import Path

import gradio as gr

from mmict_core import casestudy as cs
from mmict_core.data import get_task, make_episode
from mmict_core.methods import get_method

from .handlers import Studio, friendly, upscale

CASE_LABELS = {"vqa": "(a) VQA — ft-vqa", "caption": "(b) image captioning — ft-caption",
               "video-qa": "(c) video QA — ft-video-qa", "video-caption": "(d) video captioning — ft-video-caption",
               "binding": "per-episode binding"}
OPTIONAL_METHODS = ("icl", "hificl", "mimic", "live", "m2iv", "lora")


class CaseStudyTab:
    """Server side of the tab; the last case of each session is kept for the export."""

    def __init__(self, studio: Studio, library=None):
        self.studio = studio
        self.library = library
        self.last = weakref.WeakKeyDictionary()  # session -> its last case study (gone with the session)

    def available(self) -> list[str]:
        """Case-study types whose three case-study adapters are all in the starter library."""
        return [c for c in cs.CASE_TASKS if not cs.missing_entries(c, cs.CASE_METHODS, self.library)]

    def preview(self, case_type: str, shots: float, index: float):
        """The query and demonstrations that Run will use (drawn before any click)."""
        task = cs.resolve_task(case_type)
        ep = make_episode(get_task(task), int(shots), seed=0, index=int(index), split="test")
        q = ep.query
        demos = "\n".join(f"{j + 1}. {d.prompt} → **{d.answer}**" for j, d in enumerate(ep.demos))
        text = (f"**Query** ({len(q.images)} frame{'s' if len(q.images) > 1 else ''}): {q.prompt} — reference "
                f"**{q.answer}**\n\n**{len(ep.demos)} demonstrations** (same naming convention as the query):\n{demos}\n\n"
                f"_{get_task(task).description}_")
        return upscale(cs.query_picture(ep), 96), text

    @friendly
    def run(self, case_type: str, extra: list[str], shots: float, episodes: float, index: float,
            request: gr.Request = None, progress=gr.Progress()):
        s = self.studio.session(request)
        methods = [*cs.CASE_METHODS, *[m for m in (extra or []) if m not in cs.CASE_METHODS]]
        for m in methods:
            get_method(m)  # an unknown name is refused before anything runs
        missing = cs.missing_entries(case_type, methods, self.library)
        if missing:
            raise gr.Error(f"the starter library has no {', '.join(missing)} yet; pick another case-study type "
                           f"or method (rebuild it with: bash scripts/build_starter_library.sh)")
        n = int(episodes)
        if not 1 <= n <= 500:
            raise gr.Error(f"episodes must be between 1 and 500, got {n}")
        case = cs.run_case_study(s.backbone, case_type, methods, shots=int(shots), episodes=n, seed=0,
                                 index=int(index), library=self.library,
                                 callback=lambda f, name: progress(f, desc=f"{name} done"))
        self.last[s] = case
        rows = [[r["method"], r["shots"], r["output"], "✓" if r["correct"] else "✗"] for r in case.rows]
        acc = [[a["method"], a["shots"], a["accuracy"], f"[{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]", a["n"]]
               for a in case.accuracy]
        return rows, acc, cs.case_study_card_html(case)

    @friendly
    def export(self, request: gr.Request = None):
        case = self.last.get(self.studio.session(request))
        if case is None:
            raise gr.Error("run the case study first: there is nothing to export yet")
        out = Path(tempfile.mkdtemp(prefix="case-", dir=self.studio.workdir))
        png, html = out / "case-study.png", out / "case-study.html"
        cs.save_case_study_files(case, png, html)
        return [str(png), str(html)]


def build_tab(studio: Studio, model_queue: dict, library=None):
    """The tab's layout and events (inside the app's ``gr.Blocks``); returns the tab's server side and
    the components the page load fills (type, k, index -> query picture, text)."""
    tab = CaseStudyTab(studio, library)
    ready = tab.available()
    first = ready[0] if ready else "vqa"
    with gr.Tab("Case study", id="case-study"):
        gr.Markdown("The MMICT paper's Figure 3: the same query through **VanillaFT** (the query alone), "
                    "**VanillaICT** (demonstrations as raw visual tokens) and **MMICT** (demonstrations through "
                    "the M-Hub), trained adapters from the starter library — and, beside the one query, each "
                    "method's accuracy over N held-out episodes with a 95% interval, so one lucky query is never "
                    "the only evidence." + ("" if ready else "\n\n**The starter library is empty**: "
                                            "`bash scripts/build_starter_library.sh` builds it."))
        with gr.Row():
            kind = gr.Dropdown([(CASE_LABELS[c] + ("" if c in ready else " (not in the starter library)"), c)
                                for c in cs.CASE_TASKS], value=first, label="Case-study type")
            extra = gr.Dropdown(list(OPTIONAL_METHODS), value=["icl"], multiselect=True,
                                label="Also run (optional; adapters from the starter library)")
            shots = gr.Slider(1, 8, value=cs.DEFAULT_SHOTS, step=1, label="Demonstrations (k)")
            episodes = gr.Number(value=50, precision=0, label="Held-out episodes for the accuracy")
            index = gr.Number(value=0, precision=0, label="Query (test episode #)")
        with gr.Row():
            q_img = gr.Image(label="Query", interactive=False, height=140, scale=1)
            q_text = gr.Markdown()
        with gr.Row():
            go = gr.Button("Run the case study", variant="primary")
            export = gr.Button("Export (PNG + HTML)")
        out = gr.Dataframe(headers=["method", "demos", "output", "correct"], label="Outputs on this query",
                           interactive=False)
        acc = gr.Dataframe(headers=["method", "demos", "accuracy", "95% interval", "episodes"],
                           label="Accuracy over held-out episodes", interactive=False)
        card = gr.HTML()
        files = gr.File(label="Case study files", file_count="multiple")
        for ev in (kind.change, shots.change, index.change):
            ev(tab.preview, [kind, shots, index], [q_img, q_text])
        go.click(tab.run, [kind, extra, shots, episodes, index], [out, acc, card], **model_queue)
        export.click(tab.export, None, files, **model_queue)
    return tab, (kind, shots, index, q_img, q_text)
