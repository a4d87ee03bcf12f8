"""Event handlers of the Gradio app: thin wrappers over :mod:`mmict_core.workbench`.

Each handler takes the request (for the user's session) and plain values, and returns plain
values and figures, so tests call them directly.  Expected failures become ``gr.Error`` with the
library's message; the server keeps serving.
"""
from __future__ import annotations

import functools
import json
import inspect
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np

from mmict_core import viz
from mmict_core.data import get_task
from mmict_core.messages import INTERNAL, public_message
from mmict_core.methods import get_method
from mmict_core.workbench_jobs import using_model
from mmict_core.workbench_store import SessionStore
from mmict_core.casestudy import starter_library
from mmict_core.vlibrary.view import OWN
from mmict_core.workbench import (AUTO_STRATEGIES, BackboneCache, GALLERY_TASKS, Session, TrainRequest, WorkbenchError,
                                  heldout_summary, attention_adapters, attention_methods, rank_field, trainable_methods)

log = logging.getLogger("mmict.app")
RESULTS_FILE = "results.json"  # a stored session's last comparison
THUMB = 96  # px of gallery thumbnails (nearest-neighbour upscale of the 32 px images)


EXPECTED = (WorkbenchError, ValueError, KeyError, OSError)


def _user_error(fn_name: str, e: Exception) -> gr.Error:
    """The message a user sees: an expected error without server paths; anything else a plain
    'something went wrong' (the traceback goes to the server log, never to the browser)."""
    if isinstance(e, EXPECTED):
        log.info("handler %s refused: %s", fn_name, e)
        return gr.Error(public_message(e))
    log.exception("handler %s failed", fn_name)
    return gr.Error(INTERNAL)


def friendly(fn):
    """Turn expected errors into a message in the UI (``gr.Error``); log unexpected ones."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 — the app must keep serving
            raise _user_error(fn.__name__, e) from e

    return wrapper


def friendly_gen(fn):
    """:func:`friendly` for generator handlers (streamed outputs)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            yield from fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001
            raise _user_error(fn.__name__, e) from e

    return wrapper


def on_model(fn):
    """Run the handler holding its session's model lock (the one a TrainJob holds while training),
    so no model call overlaps a run that is still finishing a step."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        request = sig.bind(self, *args, **kwargs).arguments.get("request")
        with using_model(self.session(request).backbone):
            return fn(self, *args, **kwargs)

    return wrapper


def _warn(notes) -> None:
    for n in notes or []:
        gr.Warning(n)


def upscale(img: np.ndarray, size: int = THUMB) -> np.ndarray:
    f = max(1, size // max(img.shape[:2]))
    return np.repeat(np.repeat(img, f, axis=0), f, axis=1)  # (H*f, W*f, 3)


def _path(f) -> str | None:
    """The local path of an uploaded file (gr.File gives a path string or an object with .name)."""
    if f is None:
        return None
    return f if isinstance(f, str) else getattr(f, "name", None) or getattr(f, "path", None)


def heldout_text(h: dict | None) -> str:
    """The held-out accuracy line shown when a training run ends (empty when none was measured)."""
    if not h:
        return ""
    return f"\n\n{heldout_summary(h, bold=True)}"


class Studio:
    """The app's server side: shared backbones, one :class:`Session` per browser tab."""

    def __init__(self, spec: str | None = None, quant: str = "none", workdir: str | Path | None = None,
                 pool_size: int = 24, public: bool = False, allowed_roots=(), starter_root: str | Path | None = None):
        self.cache = BackboneCache()
        # the starter library shipped with the teaching VLM: every session sees it, read-only
        self.shared_libraries = [starter_library(starter_root)]
        self.spec, self.quant, self.pool_size = spec or "teaching", quant, pool_size
        # served beyond this machine: /load_backbone only reads folders under these roots
        self.public = public
        self.allowed_roots = [Path(r).resolve() for r in allowed_roots]
        if spec and Path(spec).exists():
            self.allowed_roots.append(Path(spec).resolve().parent)
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mmict-app-"))
        self.sessions: dict[str, Session] = {}
        # browser sessions that survive a reload: tab (session hash) -> stored session id
        self.store = SessionStore(self.workdir / "store")
        self.bound: dict[str, str] = {}
        self._lock = threading.Lock()
        self.cache.get(self.spec, self.quant)  # load the default backbone once, at start

    @property
    def num_layers(self) -> int:
        bb, _ = self.cache.get(self.spec, self.quant)
        return len(bb.decoder_layers())

    # -- sessions -----------------------------------------------------------------------------
    def session(self, request) -> Session:
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            if key not in self.sessions:
                bb, info = self.cache.get(self.spec, self.quant)
                root = (self.store.library_root(self.bound[key]) if key in self.bound else
                        self.workdir / "sessions" / "".join(c for c in key if c.isalnum())[:64] / "vlibrary")
                self.sessions[key] = Session(bb, info, library_root=root, pool_size=self.pool_size,
                                             shared_libraries=self.shared_libraries)
            return self.sessions[key]

    def attach(self, sid, request: gr.Request = None):
        """Page load: bind this tab to the browser's stored session ``sid`` (from gr.BrowserState), or
        to a fresh one, and bring back its adapters.  Returns the id the browser keeps."""
        key = getattr(request, "session_hash", None) or "default"
        sid = self.store.open(sid)
        with self._lock:
            self.bound[key] = sid
            old = self.sessions.pop(key, None)
        if old is not None:
            old.close()
        s = self.session(request)
        for e in s.library.list(source=OWN):  # the starter library's entries are loaded on demand
            try:
                s.load_from_library(e["name"])
            except Exception:  # noqa: BLE001 — one bad entry does not lose the others
                log.exception("could not restore adapter %s", e["name"])
        return sid

    @friendly
    def clear_session(self, sid, request: gr.Request = None):
        """"Clear my session": every adapter and result of this browser session is deleted."""
        key = getattr(request, "session_hash", None) or "default"
        with self._lock:
            old_sid = self.bound.pop(key, None)
            old = self.sessions.pop(key, None)
        if old is not None:
            old.close()
            if old.job is not None:
                old.job.wait_quietly(60)
        if old_sid is not None:
            self.store.clear(old_sid)
        new = self.attach(None, request)
        return new, "cleared: this session's adapters and results are deleted"

    def drop_session(self, request: gr.Request = None) -> None:
        """The tab closed: its session is closed (its training job cancelled, nothing written into it
        afterwards) and its folder removed once the job has let go of it."""
        key = getattr(request, "session_hash", None)
        with self._lock:
            s = self.sessions.pop(key, None)
            stored = self.bound.pop(key, None)
        if s is not None:
            s.close()
        if stored is not None:  # a browser session: kept for its next visit (until it expires)
            return
        folder = self.workdir / "sessions" / "".join(c for c in (key or "") if c.isalnum())[:64]

        def remove():
            if s is not None and s.job is not None:
                s.job.wait_quietly(120)
            shutil.rmtree(folder, ignore_errors=True)

        if key:
            threading.Thread(target=remove, name="mmict-drop-session", daemon=True).start()

    # -- backbone -----------------------------------------------------------------------------
    def check_backbone_spec(self, spec: str) -> str:
        """``spec`` if this server may load it: anything on a localhost server; only 'teaching', the
        startup backbone and folders under the allowed roots when it serves beyond localhost.  The
        refusal is the same whether or not the path exists (no probing of server paths)."""
        spec = (spec or "").strip() or "teaching"
        if not self.public or spec in ("teaching", self.spec):
            return spec
        try:
            p = Path(spec).expanduser().resolve()
            ok = any(p == r or r in p.parents for r in self.allowed_roots)
        except (OSError, RuntimeError, ValueError):
            ok = False
        if not ok:
            raise WorkbenchError("this server only loads the teaching backbone and the backbones its operator "
                                 "allowed; ask them to start it with --allow-backbone-dir")
        return spec

    @friendly
    def load_backbone(self, spec: str, quant: str, request: gr.Request = None):
        s = self.session(request)
        bb, info = self.cache.get(self.check_backbone_spec(spec), quant)
        if bb is not s.backbone:
            dropped = list(s.adapters)
            s.backbone, s.info = bb, info
            s.adapters.clear()  # adapters belong to the backbone they were trained on
            if dropped:
                gr.Warning(f"switching backbone removed {len(dropped)} adapter(s) from Compare "
                           f"({', '.join(dropped)}): they belong to the previous backbone")
        return info.describe()

    def backbone_text(self, request: gr.Request = None) -> str:
        s = self.session(request)
        return s.info.describe() if s.info else "(no backbone)"

    # -- demonstrations -----------------------------------------------------------------------
    def gallery_value(self, s: Session) -> list:
        out = []
        for i, ex in enumerate(s.items):
            mark = f"✓ demo {s.selected.index(i) + 1} · " if i in s.selected else ("query · " if i == s.query_item else "")
            src = "upload · " if i >= len(s.pool) else ""
            out.append((upscale(ex.images[0]), f"{mark}{src}#{i + 1} {ex.prompt} → {ex.answer}"))
        return out

    def demo_summary(self, s: Session) -> str:
        rows = [f"{j + 1}. #{i + 1} {s.items[i].prompt} → **{s.items[i].answer}**" for j, i in enumerate(s.selected)]
        try:
            cost = f"{s.demo_tokens()} LM tokens"
        except ValueError as e:
            cost = f"does not fit: {public_message(e)}"
        ctx = s.backbone.context_length
        head = f"**{len(s.selected)} demonstrations**, costing {cost}" + (f" (context {ctx})" if ctx else "")
        warn = "".join(f"\n\n⚠ {w}" for w in s.demo_warnings())
        return head + warn + ("\n\n" + "\n".join(rows) if rows else "\n\nClick gallery images to add them.")

    def query_value(self, s: Session):
        q = s.query
        return upscale(q.images[0], 128), q.prompt, q.answer

    def _demo_outputs(self, s: Session):
        return self.gallery_value(s), self.demo_summary(s), *self.query_value(s)

    @friendly
    @on_model
    def refresh(self, request: gr.Request = None):
        return self._demo_outputs(self.session(request))

    @friendly
    @on_model
    def new_pool(self, task: str, size: float, seed: float, request: gr.Request = None):
        s = self.session(request)
        s.load_pool(task, int(size), seed=int(seed), index=int(seed))
        return self._demo_outputs(s)

    @friendly
    @on_model
    def pick(self, evt: gr.SelectData, request: gr.Request = None):
        s = self.session(request)
        s.toggle(int(evt.index))
        return self._demo_outputs(s)

    @friendly
    @on_model
    def toggle(self, index: float, request: gr.Request = None):
        s = self.session(request)
        s.toggle(int(index))
        return self._demo_outputs(s)

    @friendly
    @on_model
    def move(self, position: float, delta: int, request: gr.Request = None):
        s = self.session(request)
        s.move(int(position) - 1, delta)
        return self._demo_outputs(s)

    def move_up(self, position: float, request: gr.Request = None):
        return self.move(position, -1, request)

    def move_down(self, position: float, request: gr.Request = None):
        return self.move(position, +1, request)

    @friendly
    @on_model
    def clear(self, request: gr.Request = None):
        s = self.session(request)
        s.clear()
        return self._demo_outputs(s)

    @friendly
    @on_model
    def auto_fill(self, strategy: str, k: float, seed: float, request: gr.Request = None):
        s = self.session(request)
        s.auto_fill(strategy, int(k), seed=int(seed))
        return self._demo_outputs(s)

    @friendly
    @on_model
    def upload_demo(self, file, prompt: str, answer: str, request: gr.Request = None):
        s = self.session(request)
        if _path(file) is None:
            raise WorkbenchError("no file: choose an image file to upload")
        s.add_upload(_path(file), prompt, answer)
        _warn(s.notes)
        return self._demo_outputs(s)

    @friendly
    @on_model
    def set_query(self, file, prompt: str, answer: str, request: gr.Request = None):
        s = self.session(request)
        s.set_query(image=_path(file), prompt=prompt, answer=answer)
        _warn(s.notes)
        return self._demo_outputs(s)

    @friendly
    @on_model
    def query_from_gallery(self, number: float, request: gr.Request = None):
        """Pool # counts from 1, like the gallery captions and the demonstration positions."""
        s = self.session(request)
        if number is None or int(number) < 1:
            raise WorkbenchError(f"Pool # counts from 1 (the gallery's #1 … #{len(s.items)}), got {number!r}")
        s.use_as_query(int(number) - 1)
        return self._demo_outputs(s)

    # -- compare ------------------------------------------------------------------------------
    def method_choices(self, request: gr.Request = None):
        s = self.session(request)
        names = s.method_labels()
        return gr.Dropdown(choices=names, value=names, multiselect=True)

    @friendly
    @on_model
    def compare(self, labels: list[str], request: gr.Request = None):
        s = self.session(request)
        if not labels:
            raise WorkbenchError("choose at least one method to compare")
        rows = s.compare(labels)
        table = self._table([r.as_dict() for r in rows])
        key = getattr(request, "session_hash", None) or "default"
        if key in self.bound:  # the results survive a reload too
            (self.store.path(self.bound[key]) / RESULTS_FILE).write_text(
                json.dumps({"query": s.query.prompt, "rows": [r.as_dict() for r in rows]}))
        return table, viz.case_study_html(*self._case_args(s))

    @staticmethod
    def _table(rows: list[dict]) -> list[list]:
        return [[r["method"], r["shots"], r["output"] if not r["error"] else f"(not run: {public_message(r['error'])})",
                 {True: "✓", False: "✗", None: "?"}[r["correct"]], round(r["latency_ms"], 1), r["lm_tokens"]]
                for r in rows]

    def last_results(self, request: gr.Request = None):
        """The stored session's last comparison (after a reload), as the Compare table."""
        key = getattr(request, "session_hash", None) or "default"
        sid = self.bound.get(key)
        path = self.store.path(sid) / RESULTS_FILE if sid else None
        try:
            data = json.loads(path.read_text()) if path and path.is_file() else None
            return self._table(data["rows"]) if data else []
        except (OSError, ValueError, KeyError, TypeError):
            log.exception("unreadable stored results")
            return []

    def _case_args(self, s: Session):
        rows = [r.as_dict() for r in s.last_rows if not r.error]
        demos = [(d.images[0], d.prompt, d.answer) for d in s.demos]
        return s.query.images[0], s.query.prompt, s.query.answer or None, rows, demos

    @friendly
    def export_case(self, request: gr.Request = None):
        s = self.session(request)
        if not s.last_rows:
            raise WorkbenchError("run Compare first: there is no case study to export")
        out = Path(tempfile.mkdtemp(prefix="case-", dir=self.workdir)) / "case-study"
        png, html = viz.save_case_study(out, *self._case_args(s))
        return [str(png), str(html)]

    # -- train --------------------------------------------------------------------------------
    @friendly_gen
    def train(self, method: str, task: str, samples: float, steps: float, lr: float, rank: float, seed: float,
              fixed: bool = False, heldout: float = 0, request: gr.Request = None, progress=gr.Progress()):
        """Drive the session's :class:`TrainJob`: stream its loss curve; a tab closed mid-run cancels
        the job (``drop_session``); the job itself holds the model lock while it trains."""
        s = self.session(request)
        if s.cancel_queued:  # Cancel was pressed while this request waited in the queue
            s.cancel_queued = False
            yield "cancelled before it started", viz.loss_curve([], title=f"{method} on {task}")
            return
        # an empty field is refused by validate(); a 0 is refused too, never replaced by a default
        req = TrainRequest(method=method, task=task, samples=samples, steps=steps,
                           lr=None if lr is None else float(lr),
                           rank=rank if rank is not None and rank_field(method) else None,
                           seed=int(seed or 0), fixed_binding=bool(fixed),
                           heldout=heldout if heldout is not None else 0)
        key = getattr(request, "session_hash", None) or "default"
        if key in self.bound:
            self.store.check_quota(self.bound[key])
        job = s.start_training(req)
        s.train_requested = False
        title = f"{method} on {task}"
        last_yield = 0.0
        progress(0, desc=f"training {method}")
        try:
            for ev in job.events():
                progress(ev.step / ev.total, desc=f"training {method}: step {ev.step}/{ev.total}")
                if time.time() - last_yield > 0.5 or ev.step == ev.total:
                    last_yield = time.time()
                    yield (f"step {ev.step}/{ev.total} · loss {ev.loss:.4f} · about {ev.eta_seconds:.0f} s left",
                           viz.loss_curve(job.losses, title=title))
            out = job.wait()
        finally:
            if not job.done:  # the stream was closed (tab gone): the job must not outlive it
                job.cancel()
        losses = job.losses
        if out is None:
            yield "cancelled before it started", viz.loss_curve([], title=title)
            return
        state = "cancelled after" if out.cancelled else "finished:"
        yield (f"{state} {out.result.steps} steps in {out.result.seconds:.1f} s; final loss "
               f"{losses[-1]:.4f}. Saved to this session's VLibrary as **{job.adapter_name}** — it is now in Compare."
               + heldout_text(out.heldout) if losses else f"{state} 0 steps"), viz.loss_curve(losses, title=title)

    def request_training(self, request: gr.Request = None):
        """The Train button's first, unqueued step: marks a run as requested, so a Cancel pressed while
        it waits in the queue is remembered; the Train button is disabled until the run ends."""
        s = self.session(request)
        s.train_requested, s.cancel_queued = True, False
        return "queued: waiting for the model…", gr.Button(interactive=False)

    def training_done(self):
        return gr.Button(interactive=True)

    def method_info(self, method: str):
        """The chosen method's one-line summary (from the registry) and its own fields (rank only
        where the method has one)."""
        if method not in trainable_methods():
            return "", gr.Number(visible=False)
        return f"*{get_method(method).summary}*", gr.Number(visible=rank_field(method) is not None)

    def task_info(self, task: str) -> str:
        return f"*{get_task(task).description}*" if task in GALLERY_TASKS else ""

    def cancel(self, request: gr.Request = None) -> str:
        s = self.session(request)
        if s.job is not None and not s.job.done:
            return s.job.cancel()
        if s.train_requested:
            s.train_requested, s.cancel_queued = False, True
            return "cancelled: the queued training will not start"
        return "nothing is training"

    # -- attention ----------------------------------------------------------------------------
    def attention_choices(self, request: gr.Request = None):
        s = self.session(request)
        names = attention_adapters(s.adapters)
        return gr.Dropdown(choices=names, value=names[-1] if names else None)

    @friendly
    @on_model
    def attention(self, label: str, layer: float, request: gr.Request = None):
        s = self.session(request)
        if not label:
            raise WorkbenchError(f"no adapter with virtual key/value slots chosen ({', '.join(attention_methods())}): "
                                 f"train one in the Train tab (or load one from VLibrary)")
        a = s.attention(label)
        L = a.virtual_mass.shape[0]
        lay = None if layer is None or int(layer) < 0 else min(int(layer), L - 1)
        q_pos = [i for i, it in enumerate(a.items) if it == int(a.items.max())]
        return (viz.virtual_mass_grid(a.virtual_mass, q_pos),
                viz.virtual_mass_per_token(a.virtual_mass, a.roles, a.items, a.labels, layer=lay),
                viz.slot_weights_figure(a.slot_weights, q_pos))

    # -- VLibrary -----------------------------------------------------------------------------
    def library_rows(self, s: Session, query: str = "") -> list[list]:
        entries = {e["name"]: e for e in s.library.list()}
        names = [n for n, _ in s.library.search_text(query, top_k=100)] if query.strip() else list(entries)
        rows = []
        for n in names:
            e = entries.get(n)
            if e:
                m = e.get("metrics") or {}
                loss, acc = m.get("final_loss"), m.get("accuracy")
                rows.append([n, e["source"], e["method"], e["task"], e.get("num_parameters"),
                             "" if loss is None else round(loss, 4), "" if acc is None else round(acc, 3),
                             "loaded" if n in s.adapters else ""])
        return rows

    def _library_outputs(self, s: Session, query: str = ""):
        names = [e["name"] for e in s.library.list()]
        return self.library_rows(s, query), gr.Dropdown(choices=names), gr.Dropdown(choices=names)

    @friendly
    def library_list(self, query: str = "", request: gr.Request = None):
        return self._library_outputs(self.session(request), query or "")

    @friendly
    def library_show(self, name: str, request: gr.Request = None) -> dict:
        s = self.session(request)
        if not name:
            raise WorkbenchError("choose an entry")
        return {k: v for k, v in s.library.show(name).items() if k != "path"}  # no server paths in the browser

    @friendly
    @on_model
    def library_load(self, name: str, request: gr.Request = None):
        s = self.session(request)
        if not name:
            raise WorkbenchError("choose an entry to load")
        s.load_from_library(name)
        return f"loaded {name}: it is now in Compare", *self._library_outputs(s)

    @friendly
    @on_model
    def library_compose(self, names: list[str], weights: str, request: gr.Request = None):
        s = self.session(request)
        w = None
        if weights and weights.strip():
            try:
                w = [float(x) for x in weights.replace(";", ",").split(",") if x.strip()]
            except ValueError:
                raise WorkbenchError(f"weights must be numbers separated by commas, got {weights!r}") from None
        label = s.compose(names or [], w)
        return f"composed {label}: it is now in Compare", *self._library_outputs(s)

    @friendly
    def library_delete(self, name: str, request: gr.Request = None):
        s = self.session(request)
        if not name:
            raise WorkbenchError("choose an entry to delete")
        s.delete(name)
        return f"deleted {name}", *self._library_outputs(s)


def method_help() -> str:
    return ", ".join(trainable_methods())


__all__ = ["Studio", "friendly", "upscale", "AUTO_STRATEGIES", "GALLERY_TASKS", "method_help"]
