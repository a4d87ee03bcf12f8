"""ShapesWorld: procedurally generated RGB scenes with a ground-truth description.

A scene is a 32x32 image divided into a 2x2 grid of cells; each of 1-4 objects occupies one cell
(jittered inside it) and has a shape, a colour and a size.  Everything is drawn from a
``numpy.random.Generator``, so a seed fixes the scene, its pixels and its description.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32
CELL = IMAGE_SIZE // 2
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "orange": (245, 140, 30),
}
SIZES = {"small": 3.6, "large": 6.2}  # half-extent in px
CELLS = ("top left", "top right", "bottom left", "bottom right")
BACKGROUND = (28, 28, 32)


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    cell: str
    cx: float  # centre, px
    cy: float

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    noise_seed: int

    def describe(self) -> str:
        """Canonical caption: objects in cell order, e.g. 'large red circle top left and small
        blue cross bottom right'."""
        parts = [f"{o.phrase()} {o.cell}" for o in sorted(self.objects, key=lambda o: CELLS.index(o.cell))]
        return " and ".join(parts)

    def in_cell(self, cell: str) -> ShapeObject | None:
        for o in self.objects:
            if o.cell == cell:
                return o
        return None

    def render(self) -> np.ndarray:
        return render_scene(self)


def sample_object(rng: np.random.Generator, cell: str, shape: str | None = None,
                  colour: str | None = None, size: str | None = None) -> ShapeObject:
    ci = CELLS.index(cell)
    x0, y0 = (ci % 2) * CELL, (ci // 2) * CELL
    shape = shape or SHAPES[rng.integers(len(SHAPES))]
    colour = colour or list(COLOURS)[rng.integers(len(COLOURS))]
    size = size or list(SIZES)[rng.integers(len(SIZES))]
    jitter = 1.5 if size == "large" else 3.0
    cx = x0 + CELL / 2 - 0.5 + rng.uniform(-jitter, jitter)
    cy = y0 + CELL / 2 - 0.5 + rng.uniform(-jitter, jitter)
    return ShapeObject(shape, colour, size, cell, float(cx), float(cy))


def sample_scene(rng: np.random.Generator, n_objects: int | None = None, **fixed: str) -> Scene:
    """A random scene of ``n_objects`` (1-4, random if None) objects in distinct cells.

    ``fixed`` (shape=, colour=, size=) constrains the *first* object, used by tasks that need
    an image of a given category.
    """
    n = int(rng.integers(1, 5)) if n_objects is None else int(n_objects)
    if not 1 <= n <= 4:
        raise ValueError(f"a ShapesWorld scene holds 1 to 4 objects, got {n}")
    cells = [CELLS[i] for i in rng.permutation(4)[:n]]
    objs = [sample_object(rng, cells[0], **fixed)] + [sample_object(rng, c) for c in cells[1:]]
    return Scene(tuple(objs), int(rng.integers(2**31)))


def _mask(obj: ShapeObject, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    r = SIZES[obj.size]
    dx, dy = xx - obj.cx, yy - obj.cy
    if obj.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if obj.shape == "square":
        s = r * 0.88
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if obj.shape == "triangle":  # apex up
        top, bottom = -r, r * 0.85
        inside_y = (dy >= top) & (dy <= bottom)
        half_w = (dy - top) / (bottom - top) * r
        return inside_y & (np.abs(dx) <= half_w)
    if obj.shape == "cross":
        arm = max(r * 0.34, 1.0)
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")


def render_scene(scene: Scene) -> np.ndarray:
    """Draw the scene as a (32, 32, 3) uint8 image (light per-pixel noise from the scene's seed)."""
    noise = np.random.default_rng(scene.noise_seed).normal(0.0, 6.0, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    img[:] = BACKGROUND
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    for obj in scene.objects:
        img[_mask(obj, yy, xx)] = COLOURS[obj.colour]
    return np.clip(img + noise, 0, 255).astype(np.uint8)
