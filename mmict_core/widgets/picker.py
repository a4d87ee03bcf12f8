"""The demonstration picker: the task pool as clickable thumbnails, a selection strategy + k +
"Fill", and the query.  Every action is a :class:`~mmict_core.workbench.Session` call; the widgets
only mirror ``session.selected``."""
from __future__ import annotations

import html
from typing import Callable

import ipywidgets as W

from ..workbench import AUTO_STRATEGIES, GALLERY_TASKS, Session
from ..messages import public_message
from ._common import USER_ERRORS, Panel, png_bytes


class DemoPicker(Panel):
    """Pick demonstrations from ``session``'s gallery (task pool + uploads).

    Widgets (attributes): ``task``, ``pool_size``, ``seed``, ``new_pool`` (load a fresh pool);
    ``thumbs`` (one ``Image`` per gallery item, PNG bytes) and ``toggles`` (one ``ToggleButton``
    per item: pressing it selects / deselects, its label shows the demo position); ``strategy``,
    ``k``, ``fill`` (auto-select k demos by the strategy), ``clear_button``; ``query_index`` +
    ``use_as_query``; ``query_image``, ``query_text``; ``summary``; ``status``.

    ``on_change``: callables run after every change of the selection or the pool.
    """

    def __init__(self, session: Session, *, thumb_px: int = 64, columns: int = 8):
        self.session = session
        self.thumb_px = int(thumb_px)
        self.on_change: list[Callable[[], None]] = []
        self._syncing = False
        style = {"description_width": "initial"}
        self.task = W.Dropdown(options=list(GALLERY_TASKS), value=session.task, description="task", style=style)
        self.pool_size = W.BoundedIntText(value=len(session.pool), min=1, max=256, description="pool size",
                                          style=style, layout=W.Layout(width="150px"))
        self.seed = W.IntText(value=0, description="seed", style=style, layout=W.Layout(width="120px"))
        self.new_pool = W.Button(description="New pool", icon="refresh")
        self.strategy = W.Dropdown(options=list(AUTO_STRATEGIES), value="random", description="strategy", style=style)
        self.k = W.IntSlider(value=min(4, len(session.items)), min=0, max=len(session.items), description="k", style=style)
        self.fill = W.Button(description="Fill", button_style="primary", tooltip="select k demonstrations by the strategy")
        self.clear_button = W.Button(description="Clear")
        self.query_index = W.BoundedIntText(value=0, min=0, max=max(len(session.items) - 1, 0), description="item",
                                            style=style, layout=W.Layout(width="130px"))
        self.use_as_query = W.Button(description="Use as query")
        self.query_image = W.Image(format="png", layout=W.Layout(width=f"{2 * self.thumb_px}px"))
        self.query_text = W.HTML()
        self.summary = W.HTML()
        self.status = W.HTML()
        self.gallery = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat({columns}, {self.thumb_px + 24}px)",
                                                 grid_gap="4px"))
        self.thumbs: list[W.Image] = []
        self.toggles: list[W.ToggleButton] = []

        self.new_pool.on_click(lambda _: self.load_pool())
        self.fill.on_click(lambda _: self.auto_fill())
        self.clear_button.on_click(lambda _: self.clear())
        self.use_as_query.on_click(lambda _: self.set_query_from(self.query_index.value))

        self.widget = W.VBox([
            W.HBox([self.task, self.pool_size, self.seed, self.new_pool]),
            W.HBox([self.strategy, self.k, self.fill, self.clear_button]),
            self.gallery,
            W.HBox([self.query_image, W.VBox([self.query_text, W.HBox([self.query_index, self.use_as_query])])]),
            self.summary, self.status,
        ])
        self._build_gallery()

    # -- actions (each is one Session call, then the widgets are re-synced) ---------------------
    def load_pool(self) -> None:
        try:
            self.session.load_pool(self.task.value, int(self.pool_size.value), seed=int(self.seed.value))
        except USER_ERRORS as e:
            self._say(public_message(e), "error")
            return
        self._build_gallery()
        self._say(f"new {self.task.value} pool of {len(self.session.pool)} examples (seed {self.seed.value})", "ok")

    def auto_fill(self) -> None:
        try:
            self.session.auto_fill(self.strategy.value, int(self.k.value), seed=int(self.seed.value))
        except USER_ERRORS as e:
            self._say(public_message(e), "error")
            return
        self._sync()
        self._say(f"{self.strategy.value} selection of {self.k.value} demonstrations", "ok")

    def clear(self) -> None:
        self.session.clear()
        self._sync()
        self._say("selection cleared")

    def set_query_from(self, index: int) -> None:
        try:
            self.session.use_as_query(int(index))
        except USER_ERRORS as e:
            self._say(public_message(e), "error")
            return
        self._sync()
        self._say(f"gallery item {index} is now the query (no longer selectable as a demonstration)", "ok")

    # -- widgets ----------------------------------------------------------------------------------
    def _build_gallery(self) -> None:
        items = self.session.items
        self.thumbs, self.toggles, cells = [], [], []
        for i, ex in enumerate(items):
            img = W.Image(value=png_bytes(ex.images[0], self.thumb_px), format="png",
                          layout=W.Layout(width=f"{self.thumb_px}px", height=f"{self.thumb_px}px"))
            tb = W.ToggleButton(value=False, description=ex.answer or "?", tooltip=f"{i}: {ex.prompt} -> {ex.answer}",
                                layout=W.Layout(width=f"{self.thumb_px + 20}px"))
            tb.observe(lambda change, i=i: self._on_toggle(i, change["new"]), names="value")
            self.thumbs.append(img)
            self.toggles.append(tb)
            cells.append(W.VBox([img, tb], layout=W.Layout(align_items="center")))
        self.gallery.children = cells
        self.query_index.max = max(len(items) - 1, 0)
        self._sync()

    def _on_toggle(self, i: int, pressed: bool) -> None:
        if self._syncing:
            return
        s = self.session
        if pressed != (i in s.selected):
            try:
                s.toggle(i)
            except USER_ERRORS as e:
                self._sync()
                self._say(public_message(e), "error")
                return
            ex = s.items[i]
            what = (f"added item {i} ({ex.answer}) as demonstration #{s.selected.index(i) + 1}" if i in s.selected
                    else f"removed item {i} ({ex.answer})")
            self._say(f"manual selection: {what}; {len(s.selected)} demonstration(s)", "ok")
        self._sync()

    def _sync(self) -> None:
        """Mirror the session: toggle states and labels (position in the demo order), query, summary."""
        s = self.session
        self._syncing = True
        try:
            for i, (tb, ex) in enumerate(zip(self.toggles, s.items)):
                pos = s.selected.index(i) + 1 if i in s.selected else 0
                tb.value = bool(pos)
                is_query = i == s.query_item  # the query's own item is no demonstration
                tb.disabled = is_query
                tb.description = "query" if is_query else (f"#{pos} {ex.answer}" if pos else (ex.answer or "?"))
                tb.button_style = "info" if is_query else ("success" if pos else "")
            self.k.max = len(s.selectable())
        finally:
            self._syncing = False
        q = s.query
        self.query_image.value = png_bytes(q.images[0], 2 * self.thumb_px)
        self.query_text.value = (f"<b>query</b>: {html.escape(q.prompt)}<br>reference answer: "
                                 f"<b>{html.escape(q.answer) if q.answer else '<i>unknown</i>'}</b>")
        try:
            extra = f"; they add {s.demo_tokens()} LM tokens to the query's input"
        except USER_ERRORS as e:  # e.g. the demos no longer fit the context
            extra = f" (token count unavailable: {e})"
        self.summary.value = html.escape(f"{len(s.selected)} demonstration(s), in order: items {s.selected}{extra}")
        for fn in self.on_change:
            fn()
