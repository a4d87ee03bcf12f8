"""ShapesWorld clips: short videos (4-8 frames) in which objects move, appear, disappear, change
colour or change size.

A clip holds 1-3 objects of distinct colours in distinct cells of the 2x2 grid; one or two of
them take part in an *event*, the others stay still.  Everything is drawn from a
``numpy.random.Generator``, and a :class:`ClipSpec` (the objects, their events and the frame
count) fixes every pixel of every frame, so a spec can also be written by hand (the tests build
two clips whose frame ``i`` is identical but whose answers differ).

Events (``Event.kind``):

- ``moves``: the object travels from its cell to the neighbouring cell in ``direction`` (left,
  right, up, down) at constant speed over the whole clip;
- ``appears`` / ``disappears``: the object is absent before / from frame ``at``;
- ``turns``: its colour becomes ``colour`` from frame ``at``;
- ``grows`` / ``shrinks``: its size becomes large / small from frame ``at``.

An object is named by its look when first seen: "the small red circle".
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import shapes as sw

FRAMES = (4, 8)  # frame count, inclusive range
MAX_OBJECTS = 3
EVENT_KINDS = ("moves", "appears", "disappears", "turns", "grows", "shrinks")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy) in cells
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "appears": "disappears",
            "disappears": "appears", "grows": "shrinks", "shrinks": "grows"}


@dataclass(frozen=True)
class Event:
    kind: str
    at: int = 0  # first frame with the new state (appears/disappears/turns/grows/shrinks)
    direction: str = ""  # moves
    colour: str = ""  # turns: the new colour
    speed: float = 0.0  # moves: px per frame (0: reach the next cell's centre on the last frame)

    def phrase(self) -> str:
        """What the object does, in words: 'moves left', 'turns blue', 'appears', ..."""
        if self.kind == "moves":
            return f"moves {self.direction}"
        if self.kind == "turns":
            return f"turns {self.colour}"
        return self.kind


@dataclass(frozen=True)
class ClipObject:
    shape: str
    colour: str
    size: str
    cell: str  # starting cell (for 'appears': the cell it appears in)
    dx: float = 0.0  # jitter of the centre inside the cell, px
    dy: float = 0.0
    event: Event | None = None

    def name(self, naming: str = "full") -> str:
        """The object as first seen: 'small red circle' (full), 'red circle' (colour),
        'small circle' (size)."""
        if naming == "full":
            return f"{self.size} {self.colour} {self.shape}"
        if naming == "colour":
            return f"{self.colour} {self.shape}"
        if naming == "size":
            return f"{self.size} {self.shape}"
        raise ValueError(f"unknown naming {naming!r}; use 'full', 'colour' or 'size'")

    def does(self) -> str:
        return self.event.phrase() if self.event else "nothing"


@dataclass(frozen=True)
class ClipSpec:
    """Everything that fixes a clip's pixels."""

    objects: tuple[ClipObject, ...]
    n_frames: int
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if not FRAMES[0] <= self.n_frames <= FRAMES[1]:
            raise ValueError(f"a clip has {FRAMES[0]} to {FRAMES[1]} frames, got {self.n_frames}")
        if not 1 <= len(self.objects) <= MAX_OBJECTS:
            raise ValueError(f"a clip holds 1 to {MAX_OBJECTS} objects, got {len(self.objects)}")

    # -- what happens ---------------------------------------------------------------------------
    def actors(self) -> list[ClipObject]:
        """Objects with an event, in the order the caption names them (cell order)."""
        return sorted((o for o in self.objects if o.event), key=lambda o: sw.CELLS.index(o.cell))

    def describe(self, naming: str = "full") -> str:
        """The caption: each event in cell order, e.g. 'the small red circle moves left and the
        large blue cross appears'."""
        return " and ".join(f"the {o.name(naming)} {o.does()}" for o in self.actors())

    def state(self, obj: ClipObject, t: int) -> sw.ShapeObject | None:
        """The object's look and place in frame ``t`` (None when absent)."""
        ev, colour, size = obj.event, obj.colour, obj.size
        ci = sw.CELLS.index(obj.cell)
        cx = (ci % 2) * sw.CELL + sw.CELL / 2 - 0.5 + obj.dx
        cy = (ci // 2) * sw.CELL + sw.CELL / 2 - 0.5 + obj.dy
        if ev is not None:
            if ev.kind == "appears" and t < ev.at or ev.kind == "disappears" and t >= ev.at:
                return None
            if ev.kind == "turns" and t >= ev.at:
                colour = ev.colour
            if ev.kind in ("grows", "shrinks") and t >= ev.at:
                size = "large" if ev.kind == "grows" else "small"
            if ev.kind == "moves":
                ux, uy = DIRECTIONS[ev.direction]
                speed = ev.speed or sw.CELL / (self.n_frames - 1)
                cx, cy = cx + ux * speed * t, cy + uy * speed * t
        return sw.ShapeObject(obj.shape, colour, size, obj.cell, float(cx), float(cy))

    def frame_scene(self, t: int) -> sw.Scene:
        objs = tuple(s for s in (self.state(o, t) for o in self.objects) if s is not None)
        return sw.Scene(objs, int(np.random.default_rng([self.noise_seed, t]).integers(2**31)))

    def render(self) -> list[np.ndarray]:
        """The frames, (32, 32, 3) uint8 each."""
        return [sw.render_scene(self.frame_scene(t)) for t in range(self.n_frames)]

    def visible_at(self, t: int) -> list[ClipObject]:
        return [o for o in self.objects if self.state(o, t) is not None]

    def reversed(self) -> "ClipSpec":
        """The same clip played backwards (moves go the other way, appears <-> disappears, ...)."""
        F = self.n_frames
        objs = []
        for o in self.objects:
            ev = o.event
            if ev is None:
                objs.append(o)
                continue
            if ev.kind == "moves":
                ux, uy = DIRECTIONS[ev.direction]
                speed = ev.speed or sw.CELL / (F - 1)
                end = self.state(o, F - 1)
                ci = sw.CELLS.index(o.cell)
                cell = sw.CELLS[ci + ux + 2 * uy]
                ci2 = sw.CELLS.index(cell)
                dx = end.cx - ((ci2 % 2) * sw.CELL + sw.CELL / 2 - 0.5)
                dy = end.cy - ((ci2 // 2) * sw.CELL + sw.CELL / 2 - 0.5)
                objs.append(replace(o, cell=cell, dx=dx, dy=dy,
                                    event=replace(ev, direction=OPPOSITE[ev.direction], speed=speed)))
            elif ev.kind == "turns":
                objs.append(replace(o, colour=ev.colour, event=replace(ev, colour=o.colour, at=F - ev.at)))
            elif ev.kind in ("grows", "shrinks"):
                objs.append(replace(o, size="large" if ev.kind == "grows" else "small",
                                    event=replace(ev, kind=OPPOSITE[ev.kind], at=F - ev.at)))
            else:  # appears <-> disappears
                objs.append(replace(o, event=replace(ev, kind=OPPOSITE[ev.kind], at=F - ev.at)))
        return ClipSpec(tuple(objs), F, self.noise_seed)


def _neighbours(cell: str) -> dict[str, str]:
    ci = sw.CELLS.index(cell)
    c, r = ci % 2, ci // 2
    out = {}
    for d, (ux, uy) in DIRECTIONS.items():
        c2, r2 = c + ux, r + uy
        if 0 <= c2 < 2 and 0 <= r2 < 2:
            out[d] = sw.CELLS[c2 + 2 * r2]
    return out


def sample_clip(rng: np.random.Generator, n_objects: int | None = None, n_events: int | None = None,
                kinds: tuple[str, ...] = EVENT_KINDS) -> ClipSpec:
    """A random clip: 1-3 objects of distinct colours in distinct cells, 1-2 of them with an event
    (a mover's target cell is kept free)."""
    F = int(rng.integers(FRAMES[0], FRAMES[1] + 1))
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else int(n_objects)
    n_ev = int(rng.integers(1, min(2, n) + 1)) if n_events is None else int(n_events)
    if not 1 <= n_ev <= n:
        raise ValueError(f"{n_ev} events need at least as many objects, got {n}")
    colours = [list(sw.COLOURS)[i] for i in rng.permutation(len(sw.COLOURS))]
    free = [sw.CELLS[i] for i in rng.permutation(4)]
    spare = colours[MAX_OBJECTS:]  # colours no object starts with: what 'turns' may turn into, each at most once
    taken: set[str] = set()
    objs: list[ClipObject] = []
    for j in range(n):
        has_event = j < n_ev
        kind = kinds[rng.integers(len(kinds))] if has_event else None
        cells = [c for c in free if c not in taken]
        if kind == "moves":
            options = [(c, d, t) for c in cells for d, t in _neighbours(c).items() if t not in taken]
            if not options:
                kind = [k for k in kinds if k != "moves"][rng.integers(len(kinds) - 1)] if len(kinds) > 1 else None
            else:
                cell, direction, target = options[rng.integers(len(options))]
                taken.update({cell, target})
        if kind != "moves":
            if not cells:
                break
            cell = cells[0]
            taken.add(cell)
        shape = sw.SHAPES[rng.integers(len(sw.SHAPES))]
        colour = colours[j]
        size = list(sw.SIZES)[rng.integers(len(sw.SIZES))]
        jitter = 1.0 if size == "large" else 2.0
        dx, dy = (float(v) for v in rng.uniform(-jitter, jitter, 2))
        event = None
        if kind == "moves":
            event = Event("moves", direction=direction)
        elif kind in ("appears", "disappears", "turns", "grows", "shrinks"):
            at = int(rng.integers(1, F))
            if kind == "turns":
                event = Event("turns", at=at, colour=spare.pop(int(rng.integers(len(spare)))))
            elif kind == "grows":
                size, event = "small", Event("grows", at=at)
            elif kind == "shrinks":
                size, event = "large", Event("shrinks", at=at)
            else:
                event = Event(kind, at=at)
        objs.append(ClipObject(shape, colour, size, cell, dx, dy, event))
    return ClipSpec(tuple(objs), F, int(rng.integers(2**31)))


# -- questions ------------------------------------------------------------------------------------
QTYPES = ("what-moves", "which-way", "what-appears", "what-disappears", "what-happens", "count-end")


def _doing(clip: ClipSpec, kind: str) -> list[ClipObject]:
    return [o for o in clip.objects if o.event and o.event.kind == kind]


def clip_question_fits(clip: ClipSpec, qtype: str) -> bool:
    """Whether question type ``qtype`` is well posed on ``clip`` (one answer, named unambiguously)."""
    if qtype not in QTYPES:
        raise ValueError(f"unknown question type {qtype!r}; known: {', '.join(QTYPES)}")
    if qtype == "what-moves":
        return len(_doing(clip, "moves")) == 1
    if qtype == "which-way":
        return len(_doing(clip, "moves")) >= 1
    if qtype in ("what-appears", "what-disappears"):
        return len(_doing(clip, qtype.split("-")[1])) == 1
    return True


def clip_question(rng: np.random.Generator, clip: ClipSpec, qtypes: tuple[str, ...] = QTYPES) -> tuple[str, str, str]:
    """A question whose answer follows from the clip's events: (prompt, answer, qtype).  Only
    well-posed questions are asked ('what moves ?' when exactly one object moves, ...)."""
    movers = _doing(clip, "moves")
    by_kind = {k: _doing(clip, k) for k in ("appears", "disappears")}
    options = [q for q in qtypes if clip_question_fits(clip, q)]
    if not options:
        raise ValueError(f"no question of types {qtypes} fits this clip")
    q = options[rng.integers(len(options))]
    if q == "what-moves":
        return "what moves ?", movers[0].name(), q
    if q == "which-way":
        o = movers[rng.integers(len(movers))]
        return f"which way does the {o.colour} {o.shape} move ?", o.event.direction, q
    if q in ("what-appears", "what-disappears"):
        kind = q.split("-")[1]
        return f"what {kind} ?", by_kind[kind][0].name(), q
    if q == "what-happens":
        o = clip.objects[rng.integers(len(clip.objects))]
        return f"what happens to the {o.colour} {o.shape} ?", o.does(), q
    return "how many shapes are there at the end ?", str(len(clip.visible_at(clip.n_frames - 1))), q


def clip_vocabulary() -> set[str]:
    words = set("the and what moves ? which way does move appears disappears happens to how many shapes are "
                "there at end nothing turns grows shrinks describe video .".split())
    words.update(DIRECTIONS)
    return words
