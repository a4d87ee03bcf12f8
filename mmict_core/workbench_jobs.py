"""Training jobs owned by the workbench: one :class:`TrainJob` that the app and the widgets both drive.

A job waits for its backbone's model lock (the same lock every other model call takes: a training
run, a comparison and an attention capture attach adapters to one model, so they never overlap),
then trains through :meth:`Session.train`.  It reports events (step, total, loss, eta), can be
cancelled while queued or running, and ends with the adapter's name.  A job whose session has been
closed stops after its current step and writes nothing into it.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

log = logging.getLogger("mmict.jobs")

_LOCKS: "weakref.WeakKeyDictionary[object, threading.Lock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(backbone) -> threading.Lock:
    """One lock per backbone object, taken by every job that drives the model."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(backbone)
        if lock is None:
            lock = _LOCKS[backbone] = threading.Lock()
        return lock


@contextmanager
def using_model(backbone, timeout: float | None = None) -> Iterator[None]:
    """``with using_model(bb):`` — wait for the model (at most ``timeout`` s, then RuntimeError)."""
    lock = model_lock(backbone)
    if not lock.acquire(timeout=-1 if timeout is None else timeout):
        raise RuntimeError("the model is busy with another job; try again in a moment")
    try:
        yield
    finally:
        lock.release()


@dataclass
class TrainEvent:
    step: int
    total: int
    loss: float
    eta_seconds: float  # remaining time at the mean pace so far


QUEUED, RUNNING, FINISHED, CANCELLED, FAILED = "queued", "running", "finished", "cancelled", "failed"


class TrainJob:
    """One training run of ``session`` by ``request`` (a :class:`~mmict_core.workbench.TrainRequest`).

    ``start()`` runs it in a thread (``start(threaded=False)`` in the caller); ``events()`` yields
    :class:`TrainEvent` until it ends; ``cancel()`` works while queued (it never starts) and while
    running (it stops after the current step; the adapter keeps those steps); ``wait()`` returns the
    :class:`~mmict_core.workbench.TrainOutcome` or raises the run's error.  ``adapter_name`` is the
    adapter's name in the session once finished."""

    def __init__(self, session, request, on_step=None):
        request.validate()
        self.on_step = on_step  # called in the training thread after every step: (step, total, loss)
        self.session, self.request = session, request
        self.state = QUEUED
        self.outcome = None
        self.error: BaseException | None = None
        self.adapter_name: str | None = None
        self.losses: list[float] = []
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._events: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    # -- control ------------------------------------------------------------------------------
    def start(self, threaded: bool = True) -> "TrainJob":
        if threaded:
            self._thread = threading.Thread(target=self._run, name="mmict-train", daemon=True)
            self._thread.start()
        else:
            self._run()
        return self

    def cancel(self) -> str:
        """Stop the job: before it starts, or after its current step."""
        if self.done:
            return "nothing is training"
        self._cancel.set()
        return ("cancelled: the queued training will not start" if self.state == QUEUED
                else "cancelling after the current step (the adapter keeps the steps done so far)")

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None):
        """The outcome (None if cancelled before it started); re-raises the run's error."""
        self._done.wait(timeout)
        if self.error is not None:
            raise self.error
        return self.outcome

    def wait_quietly(self, timeout: float | None = None) -> bool:
        """Wait for the job to end without raising its error; True when it has ended."""
        return self._done.wait(timeout)

    def events(self, poll: float = 0.2) -> Iterator[TrainEvent]:
        """Every step's event, then returns when the job has ended."""
        while True:
            try:
                ev = self._events.get(timeout=poll)
            except queue.Empty:
                if self.done and self._events.empty():
                    return
                continue
            if ev is None:
                return
            yield ev

    # -- the run ------------------------------------------------------------------------------
    def _step(self, step: int, total: int, loss: float):
        elapsed = time.monotonic() - self._t0
        self.losses.append(float(loss))
        self._events.put(TrainEvent(step, total, float(loss), elapsed / step * (total - step)))
        if self.on_step is not None:
            self.on_step(step, total, loss)
        return False if self._cancel.is_set() or self.session.closed else None

    def _run(self) -> None:
        lock = model_lock(self.session.backbone)
        try:
            while not lock.acquire(timeout=0.1):  # queued: a cancel or a closed session ends it here
                if self._cancel.is_set() or self.session.closed:
                    self.state = CANCELLED
                    return
            try:
                if self._cancel.is_set() or self.session.closed:
                    self.state = CANCELLED
                    return
                self.state, self._t0 = RUNNING, time.monotonic()
                self.outcome = self.session.train(self.request, callback=self._step)
                self.adapter_name = self.session.name_of(self.outcome.method)
                self.state = CANCELLED if self.outcome.cancelled else FINISHED
            finally:
                lock.release()
        except BaseException as e:  # noqa: BLE001 — handed to whoever waits on the job
            self.error, self.state = e, FAILED
            if not isinstance(e, ValueError):
                log.exception("training job failed")
        finally:
            self._done.set()
            self._events.put(None)
