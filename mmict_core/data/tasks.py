"""The task world.  Every task draws, from a seeded generator, an episode *pool* (candidate
demonstrations that share the episode's hidden variables) and one query.

Fixed-knowledge tasks (answerable zero-shot): ``shapes-vqa``, ``shapes-caption``, ``digits``.
Tasks solvable only from the demonstrations (VL-ICL style): ``binding``, ``operator``, ``format``.
"""
from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np

from . import clips as cl
from . import digits as dg
from . import shapes as sw
from .example import Episode, Example, validate_k
from .selection import select_demos

SPLITS = {"train": 0, "test": 1, "val": 2}
NONSENSE_WORDS = (
    "dax", "blicket", "wug", "toma", "fep", "zorb", "kiki", "bouba", "glim", "mib", "tufa", "pilk",
    "zup", "norg", "vex", "quib", "snarp", "yim", "hoff", "lurp", "drem", "fisk", "gorp", "jeb",
    "klon", "mox", "prit", "razz", "sull", "tand", "vopp", "wix",
)
SPANISH = {
    "red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo", "purple": "morado",
    "orange": "naranja", "circle": "circulo", "square": "cuadrado", "triangle": "triangulo",
    "cross": "cruz", "small": "pequeno", "large": "grande", "1": "uno", "2": "dos", "3": "tres", "4": "cuatro",
}
FORMAT_STYLES: dict[str, Callable[[str], str]] = {
    "prefix": lambda a: f"answer : {a}",
    "sentence": lambda a: f"it is {a}",
    "spanish": lambda a: SPANISH[a],
    "repeat": lambda a: f"{a} {a}",
    "yes": lambda a: f"yes {a}",
}
OPERATORS: dict[str, Callable[[int, int], int]] = {
    "plus": lambda a, b: a + b,
    "minus": lambda a, b: a - b,
    "times": lambda a, b: a * b,
}
PROMPTS = {
    "caption": "describe the image .",
    "digits": "what digits are these ?",
    "binding": "what is this ?",
    "operator": "what is the result ?",
    "clip-caption": "describe the video .",
    "ft-vqa": "what is in the {cell} ?",
    "ft-caption": "what shapes are in the image ?",
    "ft-video-qa": "which shape acts ?",
    "ft-video-caption": "what happens in the video ?",
}
NAMINGS = ("colour", "size")  # the downstream tasks' per-episode naming conventions


@dataclass
class Task(ABC):
    """A task: a name, its chance level, and a generator of (pool, query, hidden info)."""

    name: str = ""
    description: str = ""
    needs_demos: bool = False  # True when the answer cannot be known without demonstrations
    max_new_tokens: int = 8
    default_pool_size: int = 32
    extra_metrics: tuple = ()  # secondary metrics reported beside the main one (see evaluate.icl.EXTRA_METRICS)

    @property
    @abstractmethod
    def chance(self) -> float:
        """Accuracy of the best guess that does not use what the task is testing (see chance_note)."""

    chance_note: str = ""

    @abstractmethod
    def generate(self, rng: np.random.Generator, split: str, pool_size: int) -> tuple[list[Example], Example, dict]:
        """Draw an episode pool of ``pool_size`` candidate demonstrations, a query and the hidden info."""

    def generate_episode(self, rng: np.random.Generator, split: str, pool_size: int,
                         index: int) -> tuple[list[Example], Example, dict]:
        """``generate`` for episode ``index``: tasks with a fixed query list (local datasets) ask query ``index``."""
        return self.generate(rng, split, pool_size)

    # -- helpers -------------------------------------------------------------------------------
    def _ex(self, image: np.ndarray, prompt: str, answer: str, **meta: Any) -> Example:
        return Example(images=[image], prompt=prompt, answers=[answer], task=self.name, meta=meta)


# ------------------------------------------------------------------------------------------------
# fixed-knowledge tasks


def vqa_question(rng: np.random.Generator, scene: sw.Scene, qtypes: tuple[str, ...] | None = None) -> tuple[str, str, str]:
    """A question about ``scene`` whose answer follows from its description: (prompt, answer, qtype)."""
    qtypes = qtypes or ("colour", "shape", "count", "position", "size")
    qtype = qtypes[rng.integers(len(qtypes))]
    obj = scene.objects[rng.integers(len(scene.objects))]
    if qtype == "colour":
        return f"what colour is the shape in the {obj.cell} ?", obj.colour, qtype
    if qtype == "shape":
        return f"what shape is in the {obj.cell} ?", obj.shape, qtype
    if qtype == "size":
        return f"what size is the shape in the {obj.cell} ?", obj.size, qtype
    if qtype == "count":
        return "how many shapes are there ?", str(len(scene.objects)), qtype
    if qtype == "position":
        same = [o for o in scene.objects if o.colour == obj.colour and o.shape == obj.shape]
        if len(same) > 1:  # ambiguous reference: ask about the colour instead
            return f"what colour is the shape in the {obj.cell} ?", obj.colour, "colour"
        return f"where is the {obj.colour} {obj.shape} ?", obj.cell, qtype
    raise ValueError(f"unknown question type {qtype!r}")


@dataclass
class ShapesVQA(Task):
    name: str = "shapes-vqa"
    description: str = "Questions about colour, shape, count, position and size of ShapesWorld objects."
    max_new_tokens: int = 6
    chance_note: str = "majority answer over the question-type mix (analytic estimate)"

    @property
    def chance(self) -> float:
        return _empirical_majority(self)

    def item(self, rng: np.random.Generator) -> Example:
        scene = sw.sample_scene(rng)
        prompt, answer, qtype = vqa_question(rng, scene)
        return self._ex(scene.render(), prompt, answer, qtype=qtype, scene=scene.describe())

    def generate(self, rng, split, pool_size):
        return [self.item(rng) for _ in range(pool_size)], self.item(rng), {}


@dataclass
class ShapesCaption(Task):
    name: str = "shapes-caption"
    description: str = "Describe every object of a ShapesWorld scene, in cell order."
    max_new_tokens: int = 40
    chance_note: str = "exact-match of the most common caption"

    @property
    def chance(self) -> float:
        return _empirical_majority(self)

    def item(self, rng: np.random.Generator) -> Example:
        scene = sw.sample_scene(rng)
        return self._ex(scene.render(), PROMPTS["caption"], scene.describe(), n_objects=len(scene.objects))

    def generate(self, rng, split, pool_size):
        return [self.item(rng) for _ in range(pool_size)], self.item(rng), {}


@dataclass
class DigitsRead(Task):
    name: str = "digits"
    description: str = "Read the two handwritten digits (scikit-learn's digit images)."
    max_new_tokens: int = 4
    chance_note: str = "uniform guess of both digits"

    @property
    def chance(self) -> float:
        return 0.01

    def item(self, rng: np.random.Generator, split: str) -> Example:
        (li, a), (ri, b) = dg.sample_digit(rng, split), dg.sample_digit(rng, split)
        return self._ex(dg.render_pair(li, ri), PROMPTS["digits"], f"{a} {b}", label=str(a))

    def generate(self, rng, split, pool_size):
        return [self.item(rng, split) for _ in range(pool_size)], self.item(rng, split), {}


# ------------------------------------------------------------------------------------------------
# tasks that can only be solved from the demonstrations


@dataclass
class Binding(Task):
    """Fast concept binding: each episode binds fresh nonsense words to ``n_way`` categories
    (object colours by default, or shapes), shown only by the demonstrations."""

    name: str = "binding"
    description: str = "Each episode names n object colours with fresh nonsense words; answer with the bound word."
    needs_demos: bool = True
    max_new_tokens: int = 3
    n_way: int = 2
    category: str = "colour"  # what the words name: 'colour' or 'shape'
    fixed_binding: bool = False  # one binding for every episode (issue: --fixed-binding)
    cue_in_prompt: bool = False  # name the category in the prompt ("what is this red shape ?"): an easier
    # training variant whose key is a word, not pixels (pretraining curriculum only; never evaluated)
    chance_note: str = "uniform guess among the n_way words shown in the demonstrations"

    def __post_init__(self) -> None:
        if self.category not in ("colour", "shape"):
            raise ValueError(f"category must be 'colour' or 'shape', got {self.category!r}")
        if not 2 <= self.n_way <= len(self.categories):
            raise ValueError(f"n_way must be between 2 and {len(self.categories)}, got {self.n_way}")

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(sw.COLOURS) if self.category == "colour" else sw.SHAPES

    @property
    def chance(self) -> float:
        return 1.0 / self.n_way

    @cached_property
    def fixed_map(self) -> dict[str, str]:
        words = np.random.default_rng(7).permutation(len(NONSENSE_WORDS))
        return {c: NONSENSE_WORDS[words[i]] for i, c in enumerate(self.categories)}

    def item(self, rng: np.random.Generator, cat: str, word: str) -> Example:
        scene = sw.sample_scene(rng, n_objects=1, **{self.category: cat})
        prompt = f"what is this {cat} shape ?" if self.cue_in_prompt else PROMPTS["binding"]
        return self._ex(scene.render(), prompt, word, label=cat, scene=scene.describe())

    def generate(self, rng, split, pool_size):
        cats = [self.categories[i] for i in rng.permutation(len(self.categories))[: self.n_way]]
        if self.fixed_binding:
            binding = {c: self.fixed_map[c] for c in cats}
        else:
            words = rng.permutation(len(NONSENSE_WORDS))[: self.n_way]
            binding = {c: NONSENSE_WORDS[w] for c, w in zip(cats, words)}
        pool_cats = [cats[i % self.n_way] for i in rng.permutation(pool_size)]
        pool = [self.item(rng, c, binding[c]) for c in pool_cats]
        q = cats[rng.integers(self.n_way)]
        return pool, self.item(rng, q, binding[q]), {"binding": binding}


@dataclass
class Operator(Task):
    """Operator induction on pairs of real digit images; the operator (+, -, x) is hidden."""

    name: str = "operator"
    description: str = "Two handwritten digits and a hidden operator (plus, minus, times) shown only by the demos."
    needs_demos: bool = True
    max_new_tokens: int = 3
    chance_note: str = "majority answer over all digit pairs and operators (exact enumeration)"

    @property
    def chance(self) -> float:
        counts: dict[int, int] = {}
        for f in OPERATORS.values():
            for a in range(10):
                for b in range(10):
                    counts[f(a, b)] = counts.get(f(a, b), 0) + 1
        return max(counts.values()) / (100 * len(OPERATORS))

    @property
    def operator_blind(self) -> float:
        """Accuracy of reading both digits perfectly and guessing the operator uniformly."""
        total = 0.0
        for f in OPERATORS.values():
            for a in range(10):
                for b in range(10):
                    total += sum(g(a, b) == f(a, b) for g in OPERATORS.values()) / len(OPERATORS)
        return total / (100 * len(OPERATORS))

    def item(self, rng: np.random.Generator, split: str, op: str) -> Example:
        (li, a), (ri, b) = dg.sample_digit(rng, split), dg.sample_digit(rng, split)
        return self._ex(dg.render_pair(li, ri), PROMPTS["operator"], str(OPERATORS[op](a, b)), digits=(a, b), label=str(a))

    def generate(self, rng, split, pool_size):
        op = list(OPERATORS)[rng.integers(len(OPERATORS))]
        pool = [self.item(rng, split, op) for _ in range(pool_size)]
        return pool, self.item(rng, split, op), {"operator": op}


@dataclass
class Format(Task):
    """Answer-format induction: the demonstrations fix the output style or vocabulary."""

    name: str = "format"
    description: str = "ShapesWorld questions answered in a style (prefix, sentence, Spanish, repeat, 'yes') shown by the demos."
    needs_demos: bool = True
    max_new_tokens: int = 5
    chance_note: str = "uniform guess of the style, content known"

    @property
    def chance(self) -> float:
        return 1.0 / len(FORMAT_STYLES)

    def item(self, rng: np.random.Generator, style: str) -> Example:
        scene = sw.sample_scene(rng)
        prompt, plain, qtype = vqa_question(rng, scene, ("colour", "shape", "size", "count"))
        return self._ex(scene.render(), prompt, FORMAT_STYLES[style](plain), plain=plain, qtype=qtype, label=plain)

    def generate(self, rng, split, pool_size):
        style = list(FORMAT_STYLES)[rng.integers(len(FORMAT_STYLES))]
        pool = [self.item(rng, style) for _ in range(pool_size)]
        return pool, self.item(rng, style), {"style": style}


# ------------------------------------------------------------------------------------------------
# video: ShapesWorld clips (several frames per item)


@dataclass
class ClipQA(Task):
    name: str = "clip-qa"
    description: str = "Questions about a 4-8 frame ShapesWorld clip: what moves, which way, what appears or disappears, what happens to an object, how many at the end."
    max_new_tokens: int = 5
    default_pool_size: int = 16
    chance_note: str = "majority answer over the question-type mix (empirical, 2,000 clips)"

    @property
    def chance(self) -> float:
        return _empirical_majority(self)

    def item(self, rng: np.random.Generator) -> Example:
        qtype = cl.QTYPES[rng.integers(len(cl.QTYPES))]  # question types equally often
        while True:  # a clip on which that question is well posed
            clip = cl.sample_clip(rng)
            if cl.clip_question_fits(clip, qtype):
                break
        prompt, answer, qtype = cl.clip_question(rng, clip, (qtype,))
        return Example(images=clip.render(), prompt=prompt, answers=[answer], task=self.name,
                       meta=dict(qtype=qtype, events=clip.describe(), frames=clip.n_frames))

    def generate(self, rng, split, pool_size):
        return [self.item(rng) for _ in range(pool_size)], self.item(rng), {}


@dataclass
class ClipCaption(Task):
    name: str = "clip-caption"
    description: str = "Describe each event of a ShapesWorld clip ('the small red circle moves left and the large blue cross appears')."
    max_new_tokens: int = 16
    extra_metrics: tuple = ("cider",)
    default_pool_size: int = 16
    chance_note: str = "exact match of the most common caption (empirical, 2,000 clips)"

    @property
    def chance(self) -> float:
        return _empirical_majority(self)

    def item(self, rng: np.random.Generator) -> Example:
        clip = cl.sample_clip(rng)
        return Example(images=clip.render(), prompt=PROMPTS["clip-caption"], answers=[clip.describe()], task=self.name,
                       meta=dict(events=len(clip.actors()), frames=clip.n_frames))

    def generate(self, rng, split, pool_size):
        return [self.item(rng) for _ in range(pool_size)], self.item(rng), {}


# ------------------------------------------------------------------------------------------------
# downstream fine-tuning tasks (the MMICT paper's setting; see docs/tasks/downstream.md)


@dataclass
class Downstream(Task):
    """A downstream task of the case study.  Each episode's annotations follow one of two naming
    conventions, shown only by its demonstrations: an object is named by its colour and shape
    ("red circle") or by its size and shape ("small circle").  The pretrained teaching VLM never
    answers in either form (it names objects "small red circle"), a fine-tuned model can learn the
    content but not which convention an episode uses, and the demonstrations carry exactly that."""

    case: str = ""  # which of the MMICT paper's case-study types it stands for
    chance_note: str = "majority answer (empirical, 2,000 items); a model that knows the content but not the episode's naming convention is capped at 0.5"
    naming_blind: float = 0.5  # best accuracy without the convention (each convention has probability 1/2)
    extra_metrics: tuple = ("content",)  # exact match under either convention: what a convention-blind model can reach

    @property
    def chance(self) -> float:
        rng = np.random.default_rng(0)
        answers: dict[str, int] = {}
        for _ in range(2000):
            a = self.item(rng, NAMINGS[int(rng.integers(2))]).answer
            answers[a] = answers.get(a, 0) + 1
        return max(answers.values()) / 2000

    @abstractmethod
    def item(self, rng: np.random.Generator, naming: str) -> Example:
        """One item whose answer names objects by ``naming``; ``meta['alternative']`` holds the
        answer under the other convention (for a convention-blind content score)."""

    def generate(self, rng, split, pool_size):
        naming = NAMINGS[int(rng.integers(len(NAMINGS)))]
        return [self.item(rng, naming) for _ in range(pool_size)], self.item(rng, naming), {"naming": naming}


def _other(naming: str) -> str:
    return NAMINGS[1 - NAMINGS.index(naming)]


def _name(obj: sw.ShapeObject, naming: str) -> str:
    return f"{obj.colour if naming == 'colour' else obj.size} {obj.shape}"


@dataclass
class FtVQA(Downstream):
    name: str = "ft-vqa"
    description: str = "Case study (a) VQA: 'what is in the top left ?' answered by naming the object the episode's way ('red circle' or 'small circle')."
    case: str = "vqa"
    max_new_tokens: int = 4

    def item(self, rng, naming):
        scene = sw.sample_scene(rng)
        obj = scene.objects[rng.integers(len(scene.objects))]
        return Example(images=[scene.render()], prompt=PROMPTS["ft-vqa"].format(cell=obj.cell),
                       answers=[_name(obj, naming)], task=self.name,
                       meta=dict(naming=naming, alternative=_name(obj, _other(naming)), scene=scene.describe()))


@dataclass
class FtCaption(Downstream):
    name: str = "ft-caption"
    description: str = "Case study (b) captioning: list every object in cell order, named the episode's way ('red circle and blue cross' or 'small circle and large cross')."
    case: str = "caption"
    max_new_tokens: int = 16
    extra_metrics: tuple = ("content", "cider")

    def item(self, rng, naming):
        scene = sw.sample_scene(rng)
        objs = sorted(scene.objects, key=lambda o: sw.CELLS.index(o.cell))
        cap = lambda nm: " and ".join(_name(o, nm) for o in objs)  # noqa: E731
        return Example(images=[scene.render()], prompt=PROMPTS["ft-caption"], answers=[cap(naming)], task=self.name,
                       meta=dict(naming=naming, alternative=cap(_other(naming)), scene=scene.describe()))


def _unambiguous_clip(rng: np.random.Generator, **kw) -> cl.ClipSpec:
    """A clip whose objects all have distinct names under both conventions, so that 'the small
    square' (size naming) never stands for two objects (redrawn until it holds; a few draws)."""
    while True:
        clip = cl.sample_clip(rng, **kw)
        if all(len({o.name(nm) for o in clip.objects}) == len(clip.objects) for nm in NAMINGS):
            return clip


@dataclass
class FtVideoQA(Downstream):
    name: str = "ft-video-qa"
    description: str = "Case study (c) video QA: 'which shape acts ?' on a clip with one event, answered by naming the actor the episode's way."
    case: str = "video-qa"
    max_new_tokens: int = 4
    default_pool_size: int = 16

    def item(self, rng, naming):
        clip = _unambiguous_clip(rng, n_events=1)
        actor = clip.actors()[0]
        return Example(images=clip.render(), prompt=PROMPTS["ft-video-qa"], answers=[actor.name(naming)], task=self.name,
                       meta=dict(naming=naming, alternative=actor.name(_other(naming)), events=clip.describe()))


@dataclass
class FtVideoCaption(Downstream):
    name: str = "ft-video-caption"
    description: str = "Case study (d) video captioning: 'what happens in the video ?' — each event, its actor named the episode's way."
    case: str = "video-caption"
    max_new_tokens: int = 16
    extra_metrics: tuple = ("content", "cider")
    default_pool_size: int = 16

    def item(self, rng, naming):
        clip = _unambiguous_clip(rng)
        return Example(images=clip.render(), prompt=PROMPTS["ft-video-caption"], answers=[clip.describe(naming)],
                       task=self.name, meta=dict(naming=naming, alternative=clip.describe(_other(naming)),
                                                 events=clip.describe()))


def _empirical_majority(task: Task, n: int = 2000) -> float:
    rng = np.random.default_rng(0)
    answers: dict[str, int] = {}
    for _ in range(n):
        a = task.item(rng).answer  # type: ignore[attr-defined]
        answers[a] = answers.get(a, 0) + 1
    return max(answers.values()) / n


# ------------------------------------------------------------------------------------------------
# registry and episode sampling

TASKS: dict[str, Callable[..., Task]] = {
    "shapes-vqa": ShapesVQA,
    "shapes-caption": ShapesCaption,
    "digits": DigitsRead,
    "binding": Binding,
    "operator": Operator,
    "format": Format,
    "clip-qa": ClipQA,
    "clip-caption": ClipCaption,
    "ft-vqa": FtVQA,
    "ft-caption": FtCaption,
    "ft-video-qa": FtVideoQA,
    "ft-video-caption": FtVideoCaption,
}
PRETRAINING_TASKS = ("shapes-vqa", "shapes-caption", "digits", "binding", "operator", "format", "clip-qa", "clip-caption")
DOWNSTREAM_TASKS = ("ft-vqa", "ft-caption", "ft-video-qa", "ft-video-caption")  # never in pretraining


def task_names() -> list[str]:
    return list(TASKS)


def get_task(name: str | Task, **options: Any) -> Task:
    """The task called ``name`` (options such as ``fixed_binding=True`` go to its constructor)."""
    if isinstance(name, Task):
        return name
    if name not in TASKS:
        from .real import LOCAL_DATASETS, local_task  # datasets read from local files (need root=...)

        if name in LOCAL_DATASETS:
            return local_task(name, **options)
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}; local datasets "
                         f"(root=...): {', '.join(LOCAL_DATASETS)}")
    return TASKS[name](**options)


def episode_rng(seed: int, split: str, task_name: str, index: int, stream: int = 0) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return np.random.default_rng([int(seed), SPLITS[split], zlib.crc32(task_name.encode()), int(index), stream])


def make_episode(
    task: str | Task,
    k: int,
    *,
    seed: int = 0,
    index: int = 0,
    split: str = "test",
    selection: str = "random",
    pool_size: int | None = None,
    embed_fn: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    fixed_indices: list[int] | None = None,
) -> Episode:
    """Episode ``index`` of ``task`` for ``seed``/``split``, with ``k`` demonstrations.

    The pool and the query depend only on (seed, split, task, index), never on ``k`` or on the
    selection strategy, so curves over shots compare the *same* held-out queries; with random
    selection the demos for a smaller k are a prefix of those for a larger k.
    """
    task = get_task(task)
    pool_size = task.default_pool_size if pool_size is None else pool_size
    pool_size = max(pool_size, 1)
    pool, query, info = task.generate_episode(episode_rng(seed, split, task.name, index), split, pool_size, index)
    validate_k(k, pool, what=f"{task.name} episode pool")
    sel_rng = episode_rng(seed, split, task.name, index, stream=1)
    idx = select_demos(selection, pool, query, k, sel_rng, embed_fn=embed_fn, fixed_indices=fixed_indices)
    info = dict(info, selection=selection, pool_indices=list(idx))
    return Episode(demos=[pool[i] for i in idx], query=query, task=task.name, info=info)


def vocabulary() -> list[str]:
    """Every word any task can produce (prompts and answers), for the teaching tokenizer."""
    words: set[str] = set()
    for cell in sw.CELLS:
        words.update(f"what colour is the shape in the {cell} ?".split())
        words.update(f"what shape is in the {cell} ?".split())
        words.update(f"what size is the shape in the {cell} ?".split())
    words.update("how many shapes are there ?".split())
    words.update("where is the a and".split())
    for p in PROMPTS.values():
        words.update(p.format(cell="").split())
    words.update(cl.clip_vocabulary())
    words.update(sw.SHAPES, sw.COLOURS, sw.SIZES)
    words.update(str(i) for i in range(-9, 82))
    words.update(NONSENSE_WORDS, SPANISH.values())
    for style in FORMAT_STYLES.values():
        words.update(style("red").split())
    return sorted(words)
