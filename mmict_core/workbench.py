"""The interactive workbench: what the Gradio app and the notebook widgets both call.

One place for the steps a person takes by hand — load a backbone and see its cost, browse a task
pool, pick demonstrations (by hand or by a selection strategy), ask a query, run several methods
on the *same* episode (the MMICT paper's case study), train an adapter with live progress and
keep it in a VLibrary — so neither front end holds logic of its own.
"""
from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .backbones.encoding_cache import EncodingCache, use_encoding_cache
from .data import Episode, Example, get_task
from .data.example import ImageError, load_image
from .data.selection import STRATEGIES, select_demos
from .data.tasks import episode_rng
from .evaluate.exact_match import exact_match
from .methods import AttentionCapture, Method, captures_attention, create_method, get_method, method_names
from .train import TrainConfig, TrainResult, train

GALLERY_TASKS = ("shapes-vqa", "shapes-caption", "digits", "binding", "operator", "format", "ft-vqa", "ft-caption")
AUTO_STRATEGIES = tuple(s for s in STRATEGIES if s != "fixed")
MAX_PROMPT_CHARS = 500


class WorkbenchError(ValueError):
    """A request the workbench cannot carry out; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# backbones


@dataclass
class BackboneInfo:
    spec: str
    quant: str
    parameters: int
    footprint_bytes: int
    load_seconds: float
    context_length: int | None
    image_tokens: int

    def describe(self) -> str:
        ctx = self.context_length if self.context_length is not None else "unbounded"
        return (f"{self.spec} ({self.quant}): {self.parameters:,} parameters, "
                f"{self.footprint_bytes / 2**20:.2f} MiB in memory, loaded in {self.load_seconds:.2f} s; "
                f"context {ctx} tokens, {self.image_tokens} tokens per image")


def load_backbone_timed(spec: str | None = None, quant: str = "none"):
    """(backbone, :class:`BackboneInfo`) — the load is timed, the footprint measured by transformers."""
    from .backbones import QUANT_MODES, load_backbone

    if quant not in QUANT_MODES:
        raise WorkbenchError(f"quantisation must be one of {', '.join(QUANT_MODES)}, got {quant!r}")
    t0 = time.perf_counter()
    try:
        bb = load_backbone(spec or None, quant=quant)
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"could not load backbone {spec!r}: {e}") from e
    seconds = time.perf_counter() - t0
    info = BackboneInfo(spec=spec or "teaching", quant=quant, parameters=int(bb.model.num_parameters()),  # 4-bit: unpacked count
                        footprint_bytes=int(bb.model.get_memory_footprint()), load_seconds=seconds,
                        context_length=bb.context_length, image_tokens=image_token_count(bb))
    return bb, info


def image_token_count(backbone) -> int:
    """LM tokens one image costs on ``backbone`` (encoded once per backbone, then remembered)."""
    return int(backbone.num_image_tokens)


class BackboneCache:
    """Backbones shared by every user, keyed by (spec, quant); the oldest is dropped past ``size``."""

    def __init__(self, size: int = 3):
        self.size = size
        self._items: dict[tuple[str, str], tuple[object, BackboneInfo]] = {}
        self._lock = threading.Lock()

    def get(self, spec: str | None = None, quant: str = "none"):
        key = (spec or "teaching", quant)
        with self._lock:
            if key not in self._items:
                self._items[key] = load_backbone_timed(spec, quant)
                while len(self._items) > self.size:
                    self._items.pop(next(iter(self._items)))
            return self._items[key]


# ---------------------------------------------------------------------------------------------
# examples, pools, demonstrations


def task_pool(task: str, size: int = 24, *, seed: int = 0, index: int = 0, split: str = "val") -> tuple[list[Example], Example]:
    """A pool of ``size`` labelled examples of ``task`` and a held-out query from the same episode."""
    t = get_task(task)
    if not 1 <= size <= 256:
        raise WorkbenchError(f"pool size must be between 1 and 256, got {size}")
    pool, query, info = t.generate(episode_rng(seed, split, t.name, index), split, size)
    for ex in pool + [query]:
        ex.meta.setdefault("episode_info", info)
    return pool, query


def user_example(image, prompt: str, answer: str = "", task: str = "custom") -> Example:
    """An example from user input: an image array or a file path (safely loaded), a prompt, an
    optional answer.  Raises :class:`WorkbenchError` naming what is wrong."""
    if image is None:
        raise WorkbenchError("no image: upload one or pick one from the gallery")
    try:
        arr = load_image(image)
    except ImageError as e:
        raise WorkbenchError(f"unusable image: {e}") from e
    prompt = (prompt or "").strip()
    if not prompt:
        raise WorkbenchError("the question is empty: type a question or instruction for the image")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise WorkbenchError(f"the question is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    answer = (answer or "").strip()
    return Example(images=[arr], prompt=prompt, answers=[answer] if answer else [], task=task)


def auto_select(strategy: str, pool: Sequence[Example], query: Example, k: int, *, seed: int = 0,
                backbone=None) -> list[int]:
    """Indices of ``k`` demonstrations chosen from ``pool`` by ``strategy`` for ``query``."""
    if strategy not in AUTO_STRATEGIES:
        raise WorkbenchError(f"selection strategy must be one of {', '.join(AUTO_STRATEGIES)}, got {strategy!r}")
    if not 0 <= k <= len(pool):
        raise WorkbenchError(f"k must be between 0 and the pool size {len(pool)}, got {k}")
    embed = getattr(backbone, "retrieval_embedding", None) if strategy == "similarity" else None
    if strategy == "similarity" and embed is None:
        raise WorkbenchError("similarity selection needs a loaded backbone (it ranks by image embedding)")
    return select_demos(strategy, list(pool), query, k, np.random.default_rng(seed), embed_fn=embed)


def build_episode(demos: Sequence[Example], query: Example, task: str = "custom") -> Episode:
    return Episode(demos=list(demos), query=query, task=task)


def lm_tokens(backbone, method: Method, episode: Episode) -> int:
    """LM input tokens ``method`` spends on ``episode``'s prompt (assembles it: where the query is
    also run, read the count off the generated-from batch instead, as :func:`compare_one` does)."""
    with torch.no_grad(), method.attached():
        return batch_tokens(method.batch([episode], with_answer=False))


def batch_tokens(batch) -> int:
    """Real (unpadded) LM input positions of the first row of an assembled batch."""
    return int(batch.attention_mask[0].sum())


def demo_token_cost(backbone, demos: Sequence[Example], query: Example) -> int:
    """LM tokens the demonstrations add to the query's input under plain ICL, from the segment
    lengths of the layout (text tokenised, images counted at the backbone's tokens per image):
    nothing is encoded or assembled.  ValueError (as the assembly's) when demos and query exceed the context."""
    lengths = backbone.segment_lengths(build_episode(demos, query), with_answer=False)
    backbone.check_fits(sum(n for _, _, n in lengths))  # as the assembly would: too many demos is an error
    return sum(n for _, item, n in lengths if 0 <= item < len(demos))


# ---------------------------------------------------------------------------------------------
# methods


def trainable_methods() -> list[str]:
    return [n for n in method_names() if get_method(n).needs_training]


def training_free_methods() -> list[str]:
    """Registered methods that need no trainer (plain ICL first): built fresh for every comparison."""
    return [n for n in method_names() if not get_method(n).needs_training]


def attention_methods() -> list[str]:
    """Registered methods that implement the attention-capture protocol (the Attention view's)."""
    return [n for n in method_names() if issubclass(get_method(n), AttentionCapture)]


def attention_adapters(adapters: dict[str, Method]) -> list[str]:
    """Labels of the adapters the Attention view can show."""
    return [n for n, m in adapters.items() if captures_attention(m)]


def method_label(name: str) -> str:
    """How Compare names a registered training-free method: "ICL" for plain ICL, else its name."""
    return "ICL" if name == "icl" else name


def rank_field(method_name: str) -> str | None:
    """The config field that sets ``method_name``'s adapter size (declared by its config), or None."""
    return get_method(method_name).config_class.rank_field


def make_method(backbone, name: str, *, shots: int | None = None, rank: int | None = None,
                overrides: dict | None = None) -> Method:
    """A fresh ``name`` adapter on ``backbone``; ``rank`` goes to the method's rank field if it has one."""
    if name not in method_names():
        raise WorkbenchError(f"unknown method {name!r}; known: {', '.join(method_names())}")
    cls = get_method(name)
    kwargs = dict(overrides or {})
    if shots is not None and cls.uses_demos:
        kwargs.setdefault("shots", shots)
    rf = rank_field(name)
    if rank is not None and rf:
        kwargs[rf] = int(rank)
    try:
        return create_method(name, backbone, **kwargs)
    except (TypeError, ValueError) as e:
        raise WorkbenchError(f"{name}: {e}") from e


@dataclass
class CompareRow:
    method: str
    output: str
    correct: bool | None  # None when the query has no reference answer
    latency_ms: float
    lm_tokens: int
    shots: int
    error: str = ""

    def as_dict(self) -> dict:
        return dict(method=self.method, output=self.output, correct=self.correct, latency_ms=round(self.latency_ms, 1),
                    lm_tokens=self.lm_tokens, shots=self.shots, error=self.error)


def compare_one(backbone, episode: Episode, methods: dict[str, Method], *, max_new_tokens: int = 6) -> list[CompareRow]:
    """Run every method on the same episode.  ``methods`` maps a label to a method (plain ICL is
    the registered ``icl`` method: it reads the episode's demos).  A method that cannot run (e.g.
    the input does not fit the context) gets a row with ``error`` set instead of stopping the others.
    Each method assembles the episode once: its token count is read off the batch it generates
    from (the latency covers assembly, image encoding included, and decoding)."""
    rows = []
    for label, method in methods.items():
        shots = episode.k if method.uses_demos else 0
        try:
            if method.uses_demos and method.needs_training and episode.k == 0:
                raise WorkbenchError(f"{label} reads demonstrations: pick at least one")
            t0 = time.perf_counter()
            with torch.no_grad():
                outs, batch = method.generate_batch([episode], max_new_tokens=max_new_tokens)
            ms = 1000 * (time.perf_counter() - t0)
            out, n_tok = outs[0], batch_tokens(batch)
        except (ValueError, RuntimeError) as e:
            rows.append(CompareRow(label, "", None, 0.0, 0, shots, error=str(e)))
            continue
        correct = bool(exact_match(out, episode.query.answers)) if episode.query.answers else None
        rows.append(CompareRow(label, out, correct, ms, n_tok, shots))
    return rows


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class TrainRequest:
    method: str = "hificl"
    task: str = "binding"
    samples: int = 200
    steps: int = 60
    lr: float | None = None  # None: the method's usual rate (5e-3; MMICT's models use their own scale)
    rank: int | None = None
    seed: int = 0
    batch_size: int = 8
    fixed_binding: bool = False
    max_steps: int = 5000
    heldout: int = 0  # score the adapter on this many held-out test episodes when training ends (0: skip)

    def validate(self) -> None:
        if self.method not in trainable_methods():
            raise WorkbenchError(f"{self.method!r} is not a trainable method; choose one of {', '.join(trainable_methods())}")
        if self.task not in GALLERY_TASKS:
            raise WorkbenchError(f"unknown task {self.task!r}; choose one of {', '.join(GALLERY_TASKS)}")
        def whole(v) -> bool:
            return (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and int(v) == v)

        for name, lo, hi in (("samples", 1, 100_000), ("steps", 1, self.max_steps), ("batch_size", 1, 256)):
            v = getattr(self, name)
            if not whole(v) or not lo <= v <= hi:
                raise WorkbenchError(f"{name} must be a whole number between {lo} and {hi}, got {v!r}")
            setattr(self, name, int(v))
        if self.lr is not None:
            if (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr)
                    or not 1e-6 <= self.lr <= 1.0):
                raise WorkbenchError(f"learning rate must be between 1e-6 and 1, got {self.lr!r}")
        if not whole(self.heldout) or not 0 <= self.heldout <= 1000:
            raise WorkbenchError(f"held-out episodes must be a whole number between 0 and 1000, got {self.heldout!r}")
        self.heldout = int(self.heldout)
        if self.rank is not None:
            if not whole(self.rank) or not 1 <= self.rank <= 256:
                raise WorkbenchError(f"rank must be a whole number between 1 and 256, got {self.rank!r}")
            self.rank = int(self.rank)


@dataclass
class TrainOutcome:
    method: Method
    result: TrainResult
    cancelled: bool
    request: TrainRequest = field(default_factory=TrainRequest)
    heldout: dict | None = None  # see heldout_accuracy()


def heldout_accuracy(method: Method, task: str, episodes: int, *, fixed_binding: bool = False, seed: int = 0) -> dict:
    """``method``'s accuracy on the first ``episodes`` held-out test episodes (seed ``seed``) of ``task`` —
    with its own number of demonstrations, none for methods that read the query alone — with a 95%
    Wilson interval and the task's chance level."""
    from .evaluate.claims import wilson_interval
    from .evaluate.icl import evaluate_generation

    t = get_task(task, **({"fixed_binding": True} if fixed_binding and task == "binding" else {}))
    shots = int(getattr(method.config, "shots", 0) or 0) if method.uses_demos else 0
    r = evaluate_generation(method.generate, t, [shots], episodes=int(episodes), seed=seed, progress=False)[0]
    lo, hi = wilson_interval(r.accuracy * r.n, r.n)
    return {"accuracy": r.accuracy, "ci95": [lo, hi], "n": r.n, "shots": shots, "chance": t.chance,
            "ms_per_query": 1000 * r.seconds / r.n}  # generation time (batched), per query


def heldout_learned(h: dict) -> bool:
    """A :func:`heldout_accuracy` result shows the task learned: its 95% interval lies above chance."""
    return h["ci95"][0] > h["chance"]


def heldout_summary(h: dict, *, bold: bool = False) -> str:
    """One sentence for a status line (app and widgets): accuracy, interval, chance and the verdict."""
    verdict = ("not above chance: this adapter has not learned the task (more steps or samples, another "
               "learning rate, or fixed binding for an adapter on binding)") if h["ci95"][1] <= h["chance"] else (
        "above chance" if heldout_learned(h) else "not clearly above chance (the interval includes it)")
    acc = f"**{h['accuracy']:.3f}**" if bold else f"{h['accuracy']:.3f}"
    return (f"Held-out accuracy: {acc} [{h['ci95'][0]:.3f}, {h['ci95'][1]:.3f}] over {h['n']} test "
            f"episodes with {h['shots']} demonstration(s); chance {h['chance']:.3f} — {verdict}.")


def train_adapter(backbone, req: TrainRequest, *, callback: Callable[[int, int, float], bool | None] | None = None,
                  progress: bool = False) -> TrainOutcome:
    """Train a fresh adapter by ``req``.  ``callback(step, total, loss)`` after every step;
    returning False cancels (the adapter keeps what it learned so far)."""
    req.validate()
    method = make_method(backbone, req.method, rank=req.rank)
    kwargs = dict(task=req.task, samples=int(req.samples), steps=int(req.steps), seed=req.seed, batch_size=req.batch_size,
                  fixed_binding=req.fixed_binding and req.task == "binding")
    if req.lr is not None:
        kwargs["lr"] = float(req.lr)
    cfg = TrainConfig(**kwargs)
    state = {"cancelled": False}

    def hook(step, total, loss, parts):
        if callback is not None and callback(step, total, loss) is False:
            state["cancelled"] = True
            return False
        return None

    result = train(method, cfg, progress=progress, callback=hook)
    out = TrainOutcome(method, result, state["cancelled"], req)
    if req.heldout and not out.cancelled:
        out.heldout = heldout_accuracy(method, req.task, req.heldout, fixed_binding=cfg.fixed_binding)
    return out


def library_name(req: TrainRequest, existing: Sequence[str]) -> str:
    """A fresh, valid VLibrary entry name for a trained adapter, e.g. ``hificl-binding-60s``."""
    base = f"{req.method}-{req.task}-{req.steps}s"
    name, i = base, 2
    while name in existing:
        name, i = f"{base}-{i}", i + 1
    return name


# ---------------------------------------------------------------------------------------------
# one person's session


class Session:
    """One user's workbench: a task pool, the demonstrations picked from it (in order), the
    query, the adapters trained or loaded, a VLibrary and the last comparison.  Front ends keep
    one per user; the backbone itself is shared (see :class:`BackboneCache`)."""

    def __init__(self, backbone, info: BackboneInfo | None = None, library_root: str | os.PathLike | None = None,
                 task: str = "binding", pool_size: int = 24, seed: int = 0, shared_libraries: Sequence = ()):
        from .vlibrary import VLibrary
        from .vlibrary.view import LibraryView

        self.backbone, self.info = backbone, info
        # the user's own library (writable) seen with the shared read-only ones (the starter library),
        # of which only the entries trained on this backbone are listed
        own = VLibrary(library_root) if library_root is not None else None
        self.library = (LibraryView(own, shared_libraries, backbone.fingerprint())
                        if own is not None or shared_libraries else None)
        self.adapters: dict[str, Method] = {}
        self.uploads: list[Example] = []
        self.last_rows: list[CompareRow] = []
        self.last_train: TrainOutcome | None = None
        # image encodings of this session's Compare / Attention runs, reused while the demos, the
        # query and the backbone's vision side stay the same (bounded; see backbones.encoding_cache)
        self.encodings = EncodingCache()
        self.notes: list[str] = []  # warnings about the last text typed (unknown words)
        self.cancel = threading.Event()  # set while training runs: stop after the current step
        self.training = False
        self.closed = False  # set by close(): no job writes into this session afterwards
        self.job = None  # the current or last TrainJob (mmict_core.workbench_jobs)
        self._store = threading.Lock()
        # a front end's "Train" pressed but not yet started (e.g. waiting in the app's queue), and a
        # Cancel pressed meanwhile: the run then never starts
        self.train_requested = False
        self.cancel_queued = False
        self.load_pool(task, pool_size, seed=seed)

    # -- pool and demonstrations --------------------------------------------------------------
    def load_pool(self, task: str, size: int = 24, *, seed: int = 0, index: int = 0) -> None:
        if task not in GALLERY_TASKS:
            raise WorkbenchError(f"unknown task {task!r}; choose one of {', '.join(GALLERY_TASKS)}")
        self.task = task
        self.pool, self.query = task_pool(task, size, seed=seed, index=index)
        self.selected: list[int] = []  # indices into self.items, in demonstration order
        self.query_item: int | None = None  # the gallery item the query was taken from (not a demo)

    @property
    def items(self) -> list[Example]:
        """The gallery: the task pool followed by the user's uploads."""
        return self.pool + self.uploads

    def toggle(self, i: int) -> None:
        if not 0 <= i < len(self.items):
            raise WorkbenchError(f"no gallery item {i} (the gallery has {len(self.items)})")
        if i == self.query_item and i not in self.selected:
            raise WorkbenchError(f"gallery item {i} is the query: as a demonstration the model could copy its "
                                 f"answer; pick another item, or use another item as the query")
        if i in self.selected:
            self.selected.remove(i)
        else:
            self.selected.append(i)

    def move(self, position: int, delta: int) -> None:
        """Move the demonstration at ``position`` (in demo order) by ``delta`` places."""
        if not 0 <= position < len(self.selected):
            raise WorkbenchError(f"no demonstration at position {position} (there are {len(self.selected)})")
        j = min(max(position + delta, 0), len(self.selected) - 1)
        self.selected.insert(j, self.selected.pop(position))

    def clear(self) -> None:
        self.selected = []

    def selectable(self) -> list[int]:
        """Gallery indices that may be demonstrations: every item but the one the query came from."""
        return [i for i in range(len(self.items)) if i != self.query_item]

    def auto_fill(self, strategy: str, k: int, seed: int = 0) -> None:
        """Select ``k`` demonstrations by ``strategy`` among the :meth:`selectable` items."""
        ids = self.selectable()
        picked = auto_select(strategy, [self.items[i] for i in ids], self.query, k, seed=seed, backbone=self.backbone)
        self.selected = [ids[j] for j in picked]

    def check_text(self, prompt: str, answer: str = "") -> list[str]:
        """Refuse typed control tokens (WorkbenchError); warnings for words the model does not know."""
        from .messages import refuse_control_tokens, unknown_word_warnings

        try:
            refuse_control_tokens(prompt, self.backbone, "the question")
            refuse_control_tokens(answer, self.backbone, "the answer")
        except ValueError as e:
            raise WorkbenchError(str(e)) from None
        self.notes = unknown_word_warnings(self.backbone, f"{prompt or ''} {answer or ''}")
        return self.notes

    def add_upload(self, image, prompt: str, answer: str) -> int:
        """Add a user example to the gallery (it needs an answer to serve as a demonstration).
        Warnings about its words are in :attr:`notes`."""
        if not (answer or "").strip():
            raise WorkbenchError("a demonstration needs its answer: type the answer for the uploaded image")
        self.check_text(prompt, answer)
        self.uploads.append(user_example(image, prompt, answer, task=self.task))
        return len(self.items) - 1

    def set_query(self, image=None, prompt: str | None = None, answer: str | None = None) -> None:
        """Replace the query's image and/or question; ``answer`` '' means unknown.  Warnings about
        its words are in :attr:`notes`."""
        img = self.query.images[0] if image is None else image
        q = self.query.prompt if prompt is None else prompt
        a = (self.query.answer if answer is None else answer)
        self.check_text(q, a)
        self.query = user_example(img, q, a, task=self.task)
        self.query_item = None  # the user's own query now, not a gallery item

    def demo_warnings(self) -> list[str]:
        """The query picked as a demonstration, and demonstrations picked twice (same image and question)."""
        def same(a: Example, b: Example) -> bool:
            return (a.prompt.strip().lower() == b.prompt.strip().lower() and len(a.images) == len(b.images)
                    and all(np.array_equal(x, y) for x, y in zip(a.images, b.images)))

        out, demos = [], self.demos
        for j, d in enumerate(demos):
            if same(d, self.query):
                out.append(f"demonstration {j + 1} is the query itself: the model can copy its answer; remove it")
            twin = next((i for i in range(j) if same(demos[i], d)), None)
            if twin is not None:
                out.append(f"demonstrations {twin + 1} and {j + 1} are the same example")
        return out

    def use_as_query(self, i: int) -> None:
        if not 0 <= i < len(self.items):
            raise WorkbenchError(f"no gallery item {i}")
        ex = self.items[i]
        self.query = Example(images=list(ex.images), prompt=ex.prompt, answers=list(ex.answers), task=ex.task, meta=dict(ex.meta))
        self.query_item = i  # no longer selectable as a demonstration (see toggle, auto_fill)
        if i in self.selected:
            self.selected.remove(i)

    @property
    def demos(self) -> list[Example]:
        return [self.items[i] for i in self.selected]

    def episode(self) -> Episode:
        return build_episode(self.demos, self.query, self.task)

    def demo_tokens(self) -> int:
        return demo_token_cost(self.backbone, self.demos, self.query)

    # -- methods ------------------------------------------------------------------------------
    def method_labels(self) -> list[str]:
        """What Compare offers: plain ICL ("ICL"), every other training-free registered method (by
        its name; they read the picked demos) and every adapter of this session."""
        return list(self.methods())

    def methods(self) -> dict[str, Method]:
        """Label -> method for :meth:`method_labels`: training-free methods fresh, adapters as kept."""
        out = {method_label(n): create_method(n, self.backbone) for n in training_free_methods()}
        out.update((a, m) for a, m in self.adapters.items() if a not in out)
        return out

    def compare(self, labels: Sequence[str] | None = None, *, max_new_tokens: int | None = None) -> list[CompareRow]:
        """Plain ICL with the picked demos, the other training-free methods and every adapter of
        this session (or only ``labels``)."""
        pool = self.methods()
        labels = list(pool) if not labels else list(labels)
        unknown = [x for x in labels if x not in pool]
        if unknown:
            raise WorkbenchError(f"unknown methods {unknown}; available: {', '.join(pool)}")
        n = max_new_tokens or get_task(self.task).max_new_tokens
        ep = self.episode()
        with use_encoding_cache(self.encodings):
            self.last_rows = compare_one(self.backbone, ep, {x: pool[x] for x in labels}, max_new_tokens=n)
        return self.last_rows

    def train(self, req: TrainRequest, callback: Callable[[int, int, float], bool | None] | None = None) -> TrainOutcome:
        """Train, keep the adapter in this session and (when there is a library) store it there."""
        def cb(step, total, loss):
            result = callback(step, total, loss) if callback else None  # report every step, the last one too
            return False if self.cancel.is_set() else result

        self.training = True
        try:
            out = train_adapter(self.backbone, req, callback=cb)
        finally:
            self.training = False
            self.cancel.clear()  # a cancel pressed before the first step still counts; none carries over
        with self._store:  # close() waits for this, and after it nothing is written here
            if self.closed:
                raise WorkbenchError("this session was closed while training; nothing was saved")
            existing = list(self.adapters) + ([e["name"] for e in self.library.list()] if self.library else [])
            name = library_name(req, existing)
            if self.library is not None and self.library.writable:
                self.library.add(name, out.method, task=req.task, samples=int(req.samples),
                                 description=f"{req.method} on {req.task}{' (fixed binding)' if req.fixed_binding and req.task == 'binding' else ''}, {out.result.steps} steps" + (" (cancelled)" if out.cancelled else ""),
                                 metrics={**({"final_loss": out.result.losses[-1]} if out.result.losses else {}),
                                          **({"accuracy": out.heldout["accuracy"], "ci95_lo": out.heldout["ci95"][0],
                                              "ci95_hi": out.heldout["ci95"][1], "episodes": out.heldout["n"]}
                                             if out.heldout else {})} or None)
            self.adapters[name] = out.method
            self.last_train = out
        return out

    def new_job(self, req: TrainRequest, on_step=None):
        """This session's :class:`~mmict_core.workbench_jobs.TrainJob` for ``req`` (not started yet)."""
        from .workbench_jobs import TrainJob

        if self.closed:
            raise WorkbenchError("this session is closed")
        if self.job is not None and not self.job.done:
            raise WorkbenchError("a training run is already going: cancel it first")
        self.job = TrainJob(self, req, on_step=on_step)
        return self.job

    def start_training(self, req: TrainRequest, *, threaded: bool = True, on_step=None):
        """:meth:`new_job`, started: queued for the model, then trained (in a thread if ``threaded``)."""
        return self.new_job(req, on_step=on_step).start(threaded=threaded)

    def close(self) -> None:
        """The session ends (tab closed): its job is cancelled and nothing is written here afterwards."""
        with self._store:
            self.closed = True
        if self.job is not None:
            self.job.cancel()

    def name_of(self, method: Method) -> str | None:
        return next((n for n, m in self.adapters.items() if m is method), None)

    def share_library(self, library) -> None:
        """Also see ``library`` (read-only: e.g. the starter library) beside this session's own."""
        from .vlibrary.view import LibraryView

        if self.library is None:
            self.library = LibraryView(None, [library], self.backbone.fingerprint())
        elif all(lib.root != library.root for lib in self.library.shared):
            self.library.shared.append(library)

    def library_choices(self) -> list[str]:
        """Library entries (own and shared) that are not loaded into this session yet."""
        return [e["name"] for e in self.library.list() if e["name"] not in self.adapters] if self.library else []

    def load_from_library(self, name: str) -> str:
        if self.library is None:
            raise WorkbenchError("this session has no library")
        self.adapters[name] = self.library.load(name, self.backbone)
        return name

    def compose(self, names: Sequence[str], weights: Sequence[float] | None = None) -> str:
        if self.library is None:
            raise WorkbenchError("this session has no library")
        if len(names) < 2:
            raise WorkbenchError("pick at least two entries to compose")
        label = "+".join(names)
        self.adapters[label] = self.library.compose(names, weights, self.backbone)
        return label

    def delete(self, name: str) -> None:
        if self.library is None:
            raise WorkbenchError("this session has no library")
        self.library.remove(name)
        self.adapters.pop(name, None)

    def attention(self, label: str, *, with_answer: bool = True):
        """Virtual-KV attention of adapter ``label`` on the current episode (any adapter that
        implements the attention-capture protocol)."""
        from .inspect.virtual_kv import virtual_kv_attention

        if label not in self.adapters:
            raise WorkbenchError(f"no adapter {label!r} in this session; train or load one first")
        m = self.adapters[label]
        if not captures_attention(m):
            raise WorkbenchError(f"{label} is a {m.name} adapter, which has no virtual key/value slots; the attention view "
                                 f"needs an adapter that captures its attention ({', '.join(attention_methods())})")
        ep = self.episode()
        if not ep.query.answers:
            with_answer = False
        with use_encoding_cache(self.encodings):
            return virtual_kv_attention(m, ep, with_answer=with_answer)

    def token_attention(self, label: str, *, with_answer: bool = True):
        """Token × token attention (per layer and head) of adapter ``label`` on the current episode;
        for an adapter with virtual slots, the real keys' part of its softmax (rows sum to α)."""
        from .inspect.token_attention import token_attention

        if label not in self.adapters:
            raise WorkbenchError(f"no adapter {label!r} in this session; train or load one first")
        ep = self.episode()
        if not ep.query.answers:
            with_answer = False
        with use_encoding_cache(self.encodings):
            return token_attention(self.adapters[label], ep, with_answer=with_answer)


__all__ = ["Session", "AUTO_STRATEGIES", "GALLERY_TASKS", "BackboneCache", "BackboneInfo", "CompareRow", "TrainOutcome",
           "TrainRequest", "WorkbenchError", "heldout_accuracy", "heldout_learned", "heldout_summary", "attention_adapters", "attention_methods", "auto_select", "batch_tokens", "build_episode", "compare_one", "demo_token_cost",
           "image_token_count", "library_name", "lm_tokens", "load_backbone_timed", "make_method", "method_label",
           "rank_field", "task_pool", "train_adapter", "training_free_methods", "trainable_methods", "user_example"]
