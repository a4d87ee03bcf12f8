"""Shared plumbing of the notebook panels: PNG thumbnails, in-place figure updates, the per-backbone
busy lock, and turning a library error into a status line.  No logic of the workbench lives here."""
from __future__ import annotations

import html
import io
import threading
from contextlib import contextmanager
from typing import Iterator

import ipywidgets as W
import plotly.graph_objects as go

from ..viz import upscale_nearest
from ._figure import FigureView
from ..workbench_jobs import model_lock

# errors a panel shows to the person instead of raising: WorkbenchError, LibraryError and
# AdapterLoadError are ValueErrors; methods raise RuntimeError (e.g. an input longer than the
# context) and TypeError (a backbone the method cannot run on)
USER_ERRORS = (ValueError, RuntimeError, TypeError)

def backbone_lock(backbone) -> threading.Lock:
    """One lock per backbone object: a training run, a comparison and an attention capture attach
    adapters to the same model, so they must not overlap.  The workbench's model lock, which every
    TrainJob holds while it trains (app and panels alike)."""
    return model_lock(backbone)


@contextmanager
def try_lock(backbone) -> Iterator[bool]:
    """``with try_lock(bb) as ok:`` — ok is False (and nothing is held) when the backbone is busy."""
    lock = backbone_lock(backbone)
    ok = lock.acquire(blocking=False)
    try:
        yield ok
    finally:
        if ok:
            lock.release()


BUSY = "the backbone is busy (a training run or another job is using it): wait for it or cancel it"


def png_bytes(image, min_px: int = 64) -> bytes:
    """An (H, W, 3) uint8 image as PNG bytes, upscaled (nearest) so both sides are >= ``min_px``."""
    buf = io.BytesIO()
    upscale_nearest(image, min_px).save(buf, format="PNG")
    return buf.getvalue()


def set_figure(view: FigureView, fig: go.Figure, height: int | None = None) -> None:
    """Show ``fig`` in the panel's figure ``view`` (with ``height`` in pixels when given)."""
    view.show(fig, height=height)


def status_html(text: str, kind: str = "info") -> str:
    colour = {"info": "#374151", "ok": "#15803d", "error": "#b91c1c", "busy": "#b45309"}[kind]
    return f'<span style="color:{colour}">{html.escape(text)}</span>'


class Panel:
    """Base of the panels: ``widget`` is the top container; displaying the panel displays it."""

    widget: W.Widget
    status: W.HTML
    error: str = ""

    def _say(self, text: str, kind: str = "info") -> None:
        self.error = text if kind == "error" else ""
        self.status.value = status_html(text, kind)

    def _on_model(self, fn, *args, **kwargs) -> tuple[bool, object]:
        """``(True, fn(...))`` run holding the session's backbone; ``(False, None)`` after telling the
        person why not (busy, or the expected error's message)."""
        from ..messages import public_message

        with try_lock(self.session.backbone) as ok:
            if not ok:
                self._say(BUSY, "busy")
                return False, None
            try:
                return True, fn(*args, **kwargs)
            except USER_ERRORS as e:
                self._say(public_message(e), "error")
                return False, None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
