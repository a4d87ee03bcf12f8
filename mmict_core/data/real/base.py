"""Shared pieces of the local-dataset loaders: errors that name the path and the expected layout,
JSON reading, subset selection, and :class:`LocalDataset` — a lazy sequence of :class:`Example`s
whose images (or video frames) are read only when an item is accessed."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ..example import Example, ImageError, load_image

PathLike = str | os.PathLike


class DatasetError(Exception):
    """A local dataset that cannot be read; the message says which file and what was expected."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file or folder is missing."""


class DatasetFormatError(DatasetError, ValueError):
    """A dataset file exists but is not in the expected format (corrupt JSON, missing fields)."""


def require_file(path: PathLike, what: str, layout: str = "") -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        hint = f"\nExpected layout:\n{layout}" if layout else ""
        where = "it is a folder" if os.path.isdir(path) else "no such file"
        raise DatasetNotFoundError(f"{what} not found at {path!r} ({where}).{hint}")
    return path


def require_dir(path: PathLike, what: str, layout: str = "") -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        hint = f"\nExpected layout:\n{layout}" if layout else ""
        raise DatasetNotFoundError(f"{what} not found: no folder at {path!r}.{hint}")
    return path


def read_json(path: PathLike, what: str, layout: str = "") -> Any:
    """Parse the JSON file at ``path`` or raise a :class:`DatasetError` naming it."""
    path = require_file(path, what, layout)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(f"{what} at {path!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                 f"{exc.msg}); re-download or re-extract it") from exc
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{what} at {path!r} is not UTF-8 text ({exc}); is it the right file?") from exc


def field_of(record: Any, key: str, path: str, what: str) -> Any:
    """``record[key]`` or a :class:`DatasetFormatError` saying which file lacks it."""
    if not isinstance(record, dict) or key not in record:
        raise DatasetFormatError(f"{what} at {path!r}: an entry has no {key!r} field ({str(record)[:120]}); "
                                 f"is it the right file?")
    return record[key]


def choose_subset(n_items: int, subset: int | None = None, seed: int | None = None) -> list[int]:
    """Indices of the items to keep: all, the first ``subset``, or (with ``seed``) a seeded random
    ``subset`` kept in the original order.  The same (n_items, subset, seed) always gives the same."""
    if subset is None:
        return list(range(n_items))
    if not isinstance(subset, (int, np.integer)) or subset < 1:
        raise ValueError(f"subset must be a whole number >= 1, got {subset!r}")
    if subset >= n_items:
        return list(range(n_items))
    if seed is None:
        return list(range(subset))
    return sorted(int(i) for i in np.random.default_rng(int(seed)).choice(n_items, size=subset, replace=False))


@dataclass
class Record:
    """One item, before its media is read: image paths (one or more) or one video path."""

    media: list[str]
    prompt: str
    answers: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    video: bool = False


class LocalDataset(Sequence[Example]):
    """A dataset read from local files: ``ds[i]`` reads item *i*'s images (or samples ``num_frames``
    video frames) and returns an :class:`Example`.  ``records`` hold the text, without media."""

    def __init__(self, name: str, records: Sequence[Record], *, num_frames: int = 8, layout: str = ""):
        self.name, self.records, self.num_frames, self.layout = name, list(records), int(num_frames), layout
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        rec = self.records[index]
        return Example(images=self._media(rec), prompt=rec.prompt, answers=list(rec.answers), task=self.name,
                       meta=dict(rec.meta))

    def __iter__(self) -> Iterator[Example]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        kind = "videos" if self.records and self.records[0].video else "images"
        return f"LocalDataset({self.name!r}, {len(self)} items, {kind})"

    def _media(self, rec: Record) -> list[np.ndarray]:
        hint = f"\nExpected layout:\n{self.layout}" if self.layout else ""
        if rec.video:
            from .video import read_frames

            if not os.path.isfile(rec.media[0]):
                raise DatasetNotFoundError(f"{self.name}: video file missing: {rec.media[0]!r}.{hint}")
            return read_frames(rec.media[0], self.num_frames)
        out = []
        for path in rec.media:
            if not os.path.isfile(path):
                raise DatasetNotFoundError(f"{self.name}: image file missing: {path!r}.{hint}")
            try:
                out.append(load_image(path))
            except ImageError as exc:
                raise DatasetFormatError(f"{self.name}: {exc}") from exc
        return out

    def subset(self, subset: int | None = None, seed: int | None = None) -> "LocalDataset":
        """The first ``subset`` items, or a seeded random ``subset`` of them (see :func:`choose_subset`)."""
        keep = choose_subset(len(self), subset, seed)
        return LocalDataset(self.name, [self.records[i] for i in keep], num_frames=self.num_frames, layout=self.layout)

    def references(self) -> list[list[str]]:
        """Every item's reference answers/captions (no media read), e.g. for CIDEr-D frequencies."""
        return [list(r.answers) for r in self.records]

    def missing_files(self) -> list[str]:
        """Media paths that do not exist (an up-front check before a long run)."""
        return sorted({p for r in self.records for p in r.media if not os.path.isfile(p)})
