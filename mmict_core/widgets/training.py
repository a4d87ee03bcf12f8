"""The training panel: method, task, steps, learning rate; live progress and loss curve; cancel.

Training is the session's :class:`~mmict_core.workbench_jobs.TrainJob` (so the adapter lands in the
session and, when it has one, in its VLibrary; cancel and the model lock are the job's), run in a
background thread so the notebook stays responsive; ``threaded=False`` runs it in the caller (tests,
scripted notebook cells)."""
from __future__ import annotations

import threading
import time
from typing import Callable

import ipywidgets as W

from .. import viz
from ..methods import get_method
from ..workbench import (GALLERY_TASKS, Session, TrainOutcome, TrainRequest, heldout_learned, heldout_summary, rank_field,
                         trainable_methods)
from ..messages import INTERNAL, public_message
from ._common import USER_ERRORS, Panel, set_figure
from ._figure import FigureView

FIGURE_HEIGHT = 320  # px


class TrainingPanel(Panel):
    """Train an adapter on ``session``'s backbone.

    Widgets: ``method``, ``task``, ``steps``, ``lr``, ``samples``, ``batch_size``, ``rank`` (set to the
    method's default when the method changes; only for methods with a rank), ``seed``, ``fixed_binding``; ``train_button``,
    ``cancel_button``; ``progress`` (IntProgress, step / steps); ``figure`` (a :class:`FigureView`
    with :func:`mmict_core.viz.loss_curve`, redrawn while training); ``status``.

    Defaults that can succeed on the teaching VLM: HiFICL, 300 steps, lr 5e-3, binding with one fixed
    binding (measured: held-out accuracy 0.98-1.00 after 200-400 steps, a few seconds of CPU; on
    per-episode bindings HiFICL cannot learn, the words change every episode).  A finished run is
    scored on ``heldout`` test episodes (:func:`mmict_core.workbench.heldout_accuracy`) and the status
    says whether its 95% interval lies above chance, i.e. whether it learned the task.

    State: ``losses`` (this run's per-step losses), ``outcome`` (the :class:`TrainOutcome`),
    (``outcome.heldout``: its held-out accuracy),
    ``adapter_name`` (its name in the session), ``thread``.  ``on_step`` callables get
    ``(step, total, loss)`` after every step; ``on_done`` callables run when a run ends.
    """

    def __init__(self, session: Session, *, threaded: bool = True, method: str = "hificl", task: str | None = None,
                 steps: int = 300, lr: float = 5e-3, samples: int = 200, batch_size: int = 8, fixed_binding: bool = True,
                 heldout: int = 50, min_plot_interval: float = 0.25):
        self.session = session
        self.threaded = threaded
        self.heldout = int(heldout)  # held-out test episodes scored when a run ends (0: none)
        self.min_plot_interval = float(min_plot_interval)
        self.on_step: list[Callable[[int, int, float], None]] = []
        self.on_done: list[Callable[[], None]] = []
        self.losses: list[float] = []
        self.outcome: TrainOutcome | None = None
        self.adapter_name: str | None = None
        self.thread: threading.Thread | None = None
        self.job = None  # the session's TrainJob this panel drives
        self._running = threading.Event()
        self._last_plot = 0.0
        self._title = "training loss"
        style = {"description_width": "initial"}
        small = W.Layout(width="170px")
        self.method = W.Dropdown(options=trainable_methods(), value=method, description="method", style=style)
        self.task = W.Dropdown(options=list(GALLERY_TASKS), value=task or session.task, description="task", style=style)
        self.steps = W.BoundedIntText(value=steps, min=1, max=TrainRequest().max_steps, description="steps",
                                      style=style, layout=small)
        self.lr = W.BoundedFloatText(value=lr, min=1e-6, max=1.0, step=1e-3, description="lr", style=style, layout=small)
        self.samples = W.BoundedIntText(value=samples, min=1, max=100_000, description="samples", style=style, layout=small)
        self.batch_size = W.BoundedIntText(value=batch_size, min=1, max=256, description="batch", style=style, layout=small)
        self.rank = W.BoundedIntText(value=8, min=1, max=256, description="rank", style=style,
                                     layout=W.Layout(width="150px"))
        self.seed = W.IntText(value=0, description="seed", style=style, layout=W.Layout(width="120px"))
        self.fixed_binding = W.Checkbox(value=fixed_binding, description="fixed binding (binding task)", indent=False)
        self.train_button = W.Button(description="Train", button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", button_style="warning", icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=steps, description="step 0")
        self.status = W.HTML()
        self.figure = FigureView(viz.loss_curve([], title="training loss"), height=FIGURE_HEIGHT)

        self.train_button.on_click(lambda _: self.start())
        self.cancel_button.on_click(lambda _: self.cancel())
        self.method.observe(lambda _: self._rank_enabled(), names="value")
        self._rank_enabled()
        self.widget = W.VBox([
            W.HBox([self.method, self.task, self.fixed_binding]),
            W.HBox([self.steps, self.lr, self.samples, self.batch_size, self.rank, self.seed]),
            W.HBox([self.train_button, self.cancel_button, self.progress]),
            self.status, self.figure.widget,
        ])

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def request(self) -> TrainRequest:
        """The :class:`TrainRequest` the widgets describe."""
        return TrainRequest(method=self.method.value, task=self.task.value, samples=int(self.samples.value),
                            steps=int(self.steps.value), lr=float(self.lr.value),
                            rank=int(self.rank.value) if rank_field(self.method.value) else None,
                            seed=int(self.seed.value),
                            batch_size=int(self.batch_size.value), fixed_binding=bool(self.fixed_binding.value),
                            heldout=self.heldout)

    def start(self) -> None:
        """What the Train button does: validate, then drive the session's TrainJob (queued for the
        model, then trained; in a thread if ``threaded``)."""
        if self.running:
            self._say("a training run is already going: cancel it first", "busy")
            return
        try:
            req = self.request()
            self.job = self.session.new_job(req, on_step=self._step)
        except USER_ERRORS as e:
            self._say(public_message(e), "error")
            return
        self._running.set()
        self._title = f"{req.method} on {req.task}: training loss"
        self.losses = []
        self.outcome, self.adapter_name = None, None
        self.progress.max, self.progress.value, self.progress.description = req.steps, 0, "step 0"
        self.progress.bar_style = ""
        self._plot(force=True)
        self.train_button.disabled, self.cancel_button.disabled = True, False
        self._say(f"training {req.method} on {req.task} for {req.steps} steps ...")
        if self.threaded:
            self.thread = threading.Thread(target=self._run, name="mmict-train-panel", daemon=True)
            self.thread.start()
        else:
            self._run()

    def cancel(self) -> None:
        """What the Cancel button does: the job stops before it starts or after its current step."""
        if not self.running or self.job is None:
            self._say("nothing is training")
            return
        self._say(self.job.cancel(), "busy")

    def wait(self, timeout: float | None = None) -> TrainOutcome | None:
        """Block until the background run ends; returns its outcome (None if it failed)."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.outcome

    # -- internals ----------------------------------------------------------------------------
    def _rank_enabled(self) -> None:
        rf = rank_field(self.method.value)
        self.rank.disabled = rf is None
        if rf is not None:  # the method's own default, shown (never a hidden "0 = default")
            self.rank.value = get_method(self.method.value).config_class.__dataclass_fields__[rf].default

    def _run(self) -> None:
        job = self.job
        try:
            job.start(threaded=False)  # this thread: queued for the model lock, then trained
            out = job.wait()
            if out is None:
                self._say("cancelled before it started", "busy")
                return
            self.outcome = out
            # the authoritative record: a step that saw the cancel flag first never reached _step
            self.losses = list(out.result.losses)
            self.progress.value = out.result.steps
            self.progress.description = f"step {out.result.steps}"
            self.adapter_name = job.adapter_name
            r = out.result
            how = "cancelled after" if out.cancelled else "finished:"
            last = f"; final loss {r.losses[-1]:.4f}" if r.losses else ""
            stored = " and stored in its VLibrary" if self.session.library is not None else ""
            self.progress.bar_style = "warning" if out.cancelled else "success"
            done = (f"{how} {r.steps} steps in {r.seconds:.1f} s{last}. The adapter is {self.adapter_name!r} "
                    f"in this session{stored}.")
            h = out.heldout
            if out.cancelled or not h:
                self._say(done, "busy" if out.cancelled else "ok")
            else:  # the held-out check the session ran (TrainRequest.heldout): did the run learn the task?
                learned = heldout_learned(h)
                if not learned:
                    self.progress.bar_style = "warning"
                self._say(f"{done} {heldout_summary(h)}", "ok" if learned else "error")
        except USER_ERRORS as e:
            self.progress.bar_style = "danger"
            self._say(f"training failed: {public_message(e)}", "error")
        except Exception as e:  # a bug, not bad input: shown in the panel, and raised where someone can see it
            self.progress.bar_style = "danger"
            self._say(f"training failed: {INTERNAL}", "error")
            raise
        finally:
            self._running.clear()
            self._plot(force=True)
            self.train_button.disabled, self.cancel_button.disabled = False, True
            for fn in self.on_done:
                fn()

    def _step(self, step: int, total: int, loss: float) -> bool | None:
        self.losses.append(float(loss))
        self.progress.value = step
        self.progress.description = f"step {step}"
        self._plot(force=step == total)
        for fn in self.on_step:
            fn(step, total, loss)  # the job reads its cancel flag right after this

    def _plot(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_plot >= self.min_plot_interval:
            self._last_plot = now
            set_figure(self.figure, viz.loss_curve(self.losses, title=self._title), height=FIGURE_HEIGHT)
