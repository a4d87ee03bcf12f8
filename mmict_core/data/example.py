"""Examples, episodes and safe image loading.

An :class:`Example` is one item a VLM sees: one or more images (or video frames), a prompt
and its reference answer(s).  An :class:`Episode` is ``k`` demonstrations followed by a query.
Images are always held as ``uint8`` arrays of shape ``(H, W, 3)``.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

MAX_IMAGE_SIDE = 4096  # px; larger images are refused before they are decoded
MIN_IMAGE_SIDE = 1


class ImageError(ValueError):
    """An image that cannot be used: not an image, corrupt, or of an unusable size."""


@dataclass
class Example:
    """One item: images, a prompt, and the accepted answers (the first is the training target)."""

    images: list[np.ndarray]
    prompt: str
    answers: list[str]
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("an Example needs at least one image")
        self.images = [check_image_array(im) for im in self.images]
        if isinstance(self.answers, str):
            self.answers = [self.answers]
        self.answers = list(self.answers)

    @property
    def answer(self) -> str:
        """The training target (first reference answer); '' for an unlabelled query."""
        return self.answers[0] if self.answers else ""

    @property
    def label(self) -> str:
        """The class used by class-balanced selection (task-defined, defaults to the answer)."""
        return str(self.meta.get("label", self.answer))


@dataclass
class Episode:
    """``demos`` (k examples, in order) followed by ``query``; ``info`` holds the episode's hidden
    variables (a binding, an operator, a format style) for analysis and tests."""

    demos: list[Example]
    query: Example
    task: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.demos)


def check_image_array(image: Any) -> np.ndarray:
    """Return ``image`` as a ``(H, W, 3)`` uint8 array or raise :class:`ImageError` saying why."""
    arr = np.asarray(image)
    if arr.dtype == object:
        raise ImageError("image must be a numeric array, got objects")
    if arr.ndim == 2:  # grayscale
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {tuple(arr.shape)}")
    h, w = arr.shape[:2]
    _check_side(h, w)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all():
                raise ImageError("image contains NaN or infinite values")
            if arr.max(initial=0) <= 1.0:
                arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _check_side(h: int, w: int) -> None:
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ImageError(f"image is {w}x{h} px: it has no pixels; use an image at least 1x1 px")
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ImageError(
            f"image is {w}x{h} px; the limit is {MAX_IMAGE_SIDE} px a side. Downscale it first "
            f"(the teaching VLM sees 32x32 px anyway)."
        )


def load_image(source: str | os.PathLike | bytes | np.ndarray | Any) -> np.ndarray:
    """Load an image from a path, raw bytes, a PIL image or an array, safely.

    The size is read from the header and checked *before* pixels are decoded, so a
    20000 x 20000 file is refused without allocating it.  Raises :class:`ImageError`.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, np.ndarray):
        return check_image_array(source)
    if isinstance(source, Image.Image):
        _check_side(source.height, source.width)
        return check_image_array(to_rgb8(source))
    name = "the uploaded bytes"
    if isinstance(source, (bytes, bytearray)):
        fh: Any = io.BytesIO(source)
    else:
        path = os.fspath(source)
        name = os.path.basename(path) or "the file"  # messages name the file, never the server's folders
        if not os.path.isfile(path):
            raise ImageError(f"no image file {name!r}")
        fh = open(path, "rb")
    try:
        with fh:
            try:
                with Image.open(fh) as im:
                    _check_side(im.height, im.width)
                    im.load()
                    return check_image_array(to_rgb8(im))
            except Image.DecompressionBombError as exc:  # refused by PIL from the header: too many pixels
                raise ImageError(
                    f"{name} is too large to decode; the limit is {MAX_IMAGE_SIDE} px a side. Downscale it first."
                ) from exc
            except UnidentifiedImageError as exc:
                raise ImageError(f"{name} is not a readable image; use a PNG or JPEG file") from exc
            except (OSError, SyntaxError, ValueError) as exc:
                if isinstance(exc, ImageError):
                    raise
                raise ImageError(f"{name} is a corrupt or truncated image; re-export it as PNG") from exc
    except ImageError:
        raise


def to_rgb8(im) -> np.ndarray:
    """A PIL image of any mode as (H, W, 3) uint8 RGB.

    16-bit ("I;16*") and 32-bit integer ("I") grey is scaled by 255/65535 (the 16-bit range; "I" is
    what PIL makes of 16-bit PNGs), float ("F") grey in [0, 1] by 255 (else clipped to 0..255), so a
    16-bit scan is not shown saturated white.  Transparency (LA, PA, RGBA, P with a transparent
    colour) is composited on white; CMYK, YCbCr, 1, L and the rest go through PIL's own conversion."""
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im, dtype=np.float64)  # (H, W) 0..65535
        grey = np.clip(np.rint(a * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        scale = 255.0 if a.size and a.min() >= 0.0 and a.max() <= 1.0 else 1.0
        grey = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("LA", "PA", "RGBA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def validate_k(k: int, pool: Sequence[Any], what: str = "pool") -> None:
    """Raise a clear ``ValueError`` when ``k`` demonstrations cannot be drawn from ``pool``."""
    if not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"the number of demonstrations must be a whole number >= 0, got {k!r}")
    if k > len(pool):
        raise ValueError(
            f"asked for {k} demonstrations but the {what} holds only {len(pool)}; "
            f"use k <= {len(pool)} or a larger pool"
        )
