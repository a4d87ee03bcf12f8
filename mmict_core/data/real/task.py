"""Local datasets as :class:`~mmict_core.data.tasks.Task`s: demonstrations drawn from a *support*
set (a seeded subset of the training split, as in the MimIC/LIVE protocol: 1,000 items, seed 3407)
and queries taken in order from the evaluation split, so ``make_episode(task, k, index=i)`` asks
query *i* and the evaluation loop sweeps the whole split.

``local_task("vqav2", root="/data/vqav2")`` builds one from the standard layout of ``root``
(docs/datasets_and_metrics.md); ``LOCAL_DATASETS`` lists the names.  Splits are read lazily, on the
first episode that needs them.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np

from ..example import Example
from ..tasks import Task
from .base import DatasetFormatError, DatasetNotFoundError, LocalDataset
from .coco import load_coco_karpathy
from .msvd_msrvtt import load_msrvtt_captions, load_msvd_captions, load_video_qa
from .vqa import load_vqa

DATA_ROOT_ENV = "MMICT_DATA_ROOT"


@dataclass
class LocalTask(Task):
    """A task over local files.  ``splits`` maps ``"train"``/``"val"``/``"test"`` to a loader of
    that split's queries; ``support`` names the split the demonstrations come from.  Every pool item
    is read (images decoded) when an episode is made, so keep ``pool_size`` near ``k`` for random
    selection, especially on video."""

    name: str = "local"
    description: str = "A dataset read from local files."
    max_new_tokens: int = 10
    default_pool_size: int = 32
    metric: str = "vqa_accuracy"  # how the evaluation loop should score it: vqa_accuracy | cider | accuracy
    splits: dict[str, Callable[[], LocalDataset]] = field(default_factory=dict)
    support: str = "train"
    support_size: int | None = 1000  # None: the whole support split
    support_seed: int = 3407
    chance_note: str = "share of test queries whose reference answers include the most frequent support answer"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def dataset(self, split: str) -> LocalDataset:
        """The queries of ``split`` (read on first use)."""
        if split not in self._cache:
            if split not in self.splits:
                raise ValueError(f"{self.name} has no {split!r} split; it has {', '.join(self.splits) or 'none'}")
            same = [s for s, load in self.splits.items() if load is self.splits[split] and s in self._cache]
            self._cache[split] = self._cache[same[0]] if same else self.splits[split]()  # "val" is "test": read once
        return self._cache[split]

    def support_set(self) -> LocalDataset:
        """The demonstration candidates: ``support_size`` seeded items of the ``support`` split."""
        key = "_support"
        if key not in self._cache:
            self._cache[key] = self.dataset(self.support).subset(self.support_size, self.support_seed)
        return self._cache[key]

    def _support_position(self) -> dict[int, int]:
        if "_positions" not in self._cache:
            self._cache["_positions"] = {id(r): i for i, r in enumerate(self.support_set().records)}
        return self._cache["_positions"]

    @property
    def chance(self) -> float:
        labels = Counter(r.meta.get("label", r.answers[0] if r.answers else "") for r in self.support_set().records)
        if self.metric == "cider" or not labels:
            return 0.0
        guess = labels.most_common(1)[0][0]
        test = self.dataset("test").records
        return sum(guess in r.answers for r in test) / max(1, len(test))

    def generate(self, rng: np.random.Generator, split: str, pool_size: int):
        return self.generate_episode(rng, split, pool_size, int(rng.integers(max(1, len(self.dataset(split))))))

    def generate_episode(self, rng: np.random.Generator, split: str, pool_size: int, index: int):
        queries, support = self.dataset(split), self.support_set()
        for what, ds in (("the " + repr(split) + " split", queries), ("the support set", support)):
            if not len(ds):
                raise DatasetFormatError(f"{self.name}: {what} has no items; check the annotation files")
        qi = int(index) % len(queries)
        candidates = np.arange(len(support))
        if split == self.support:  # the query cannot be its own demonstration
            own = self._support_position().get(id(queries.records[qi]))
            candidates = candidates[candidates != own] if own is not None else candidates
        picked = rng.choice(candidates, size=min(pool_size, len(candidates)), replace=False)
        pool: list[Example] = [support[int(i)] for i in picked]
        return pool, queries[qi], {"query_index": qi, "support_indices": [int(i) for i in picked]}


def _root(root: str | os.PathLike | None, name: str) -> str:
    if root is None:
        base = os.environ.get(DATA_ROOT_ENV)
        if not base:
            raise DatasetNotFoundError(f"{name}: give root=<folder of the dataset> or set {DATA_ROOT_ENV} "
                                       f"(then {name} is read from ${DATA_ROOT_ENV}/{name})")
        root = os.path.join(base, name)
    return os.fspath(root)


def _vqa_task(name: str, q_fmt: str, a_fmt: str, description: str, root=None, *, image_root=None,
              eval_questions: str | None = None, eval_subset: int | None = None, eval_seed: int | None = None,
              **options: Any) -> LocalTask:
    root = _root(root, name)
    images = os.fspath(image_root or root)

    def split(s: str, questions: str | None = None, subset=None, seed=None) -> Callable[[], LocalDataset]:
        q = os.path.join(root, questions or q_fmt.format(s))
        return partial(load_vqa, q, os.path.join(root, a_fmt.format(s)), os.path.join(images, f"{s}2014"),
                       name=name, subset=subset, seed=seed, subtype=f"{s}2014")

    val = split("val", eval_questions, eval_subset, eval_seed)
    return LocalTask(name=name, description=description, max_new_tokens=10, metric="vqa_accuracy",
                     splits={"train": split("train"), "val": val, "test": val}, **options)


def _coco_task(root=None, *, image_root=None, annotation_file: str = "dataset_coco.json", eval_split: str = "val",
               eval_subset: int | None = None, eval_seed: int | None = None, prompt: str | None = None,
               **options: Any) -> LocalTask:
    root = _root(root, "coco-caption")
    load = partial(load_coco_karpathy, os.path.join(root, annotation_file), os.fspath(image_root or root),
                   **({"prompt": prompt} if prompt else {}))
    return LocalTask(name="coco-caption", description="COCO captions, Karpathy split (CIDEr-D).",
                     max_new_tokens=20, metric="cider", chance_note="no guess scores on captions",
                     splits={"train": partial(load, "train"), "val": partial(load, "val", subset=eval_subset, seed=eval_seed),
                             "test": partial(load, eval_split, subset=eval_subset, seed=eval_seed)}, **options)


def _videoqa_task(name: str, id_format: str, root=None, *, video_dir=None, num_frames: int = 8,
                  eval_subset: int | None = None, eval_seed: int | None = None, **options: Any) -> LocalTask:
    root = _root(root, name)
    videos = os.fspath(video_dir or os.path.join(root, "videos"))
    mapping = os.path.join(root, "youtube_mapping.txt")
    mapping = mapping if os.path.isfile(mapping) else None

    def split(s: str, **kw) -> Callable[[], LocalDataset]:
        return partial(load_video_qa, os.path.join(root, f"{s}_qa.json"), videos, name=name, id_format=id_format,
                       mapping_file=mapping, num_frames=num_frames, **kw)

    return LocalTask(name=name, description=f"{name.upper()} open-ended video QA (accuracy).", max_new_tokens=10,
                     metric="accuracy", splits={"train": split("train"), "val": split("val"),
                                                "test": split("test", subset=eval_subset, seed=eval_seed)}, **options)


def _video_caption_task(name: str, root=None, *, video_dir=None, num_frames: int = 8,
                        eval_subset: int | None = None, eval_seed: int | None = None, **options: Any) -> LocalTask:
    root = _root(root, name)
    videos = os.fspath(video_dir or os.path.join(root, "videos"))
    if name == "msvd-caption":
        load = partial(load_msvd_captions, os.path.join(root, "AllVideoDescriptions.txt"), videos,
                       mapping_file=os.path.join(root, "youtube_mapping.txt"), num_frames=num_frames)
    else:
        test_file = os.path.join(root, "test_videodatainfo.json")
        trainval = os.path.join(root, "train_val_videodatainfo.json")

        def load(s, **kw):
            f = test_file if s == "test" and os.path.isfile(test_file) else trainval
            return load_msrvtt_captions(f, videos, s, num_frames=num_frames, **kw)
    return LocalTask(name=name, description=f"{name.split('-')[0].upper()} video captioning (CIDEr-D).",
                     max_new_tokens=20, metric="cider", chance_note="no guess scores on captions",
                     splits={"train": partial(load, "train"), "val": partial(load, "val"),
                             "test": partial(load, "test", subset=eval_subset, seed=eval_seed)}, **options)


LOCAL_DATASETS: dict[str, Callable[..., LocalTask]] = {
    "vqav2": partial(_vqa_task, "vqav2", "v2_OpenEnded_mscoco_{}2014_questions.json", "v2_mscoco_{}2014_annotations.json",
                     "VQAv2 open-ended questions on COCO (VQA accuracy)."),
    "okvqa": partial(_vqa_task, "okvqa", "OpenEnded_mscoco_{}2014_questions.json", "mscoco_{}2014_annotations.json",
                     "OK-VQA: questions needing outside knowledge, on COCO (VQA accuracy)."),
    "coco-caption": _coco_task,
    "msvd-qa": partial(_videoqa_task, "msvd-qa", "vid{}"),
    "msrvtt-qa": partial(_videoqa_task, "msrvtt-qa", "video{}"),
    "msvd-caption": partial(_video_caption_task, "msvd-caption"),
    "msrvtt-caption": partial(_video_caption_task, "msrvtt-caption"),
}


def local_task(name: str, root: str | os.PathLike | None = None, **options: Any) -> LocalTask:
    """The task over local dataset ``name`` (one of ``LOCAL_DATASETS``) stored under ``root``.

    Options: ``eval_subset``/``eval_seed`` (e.g. VQAv2's 10k val subset: ``eval_subset=10000``, or
    ``eval_questions=`` a question file that lists it), ``support_size``/``support_seed``,
    ``image_root``/``video_dir``, ``num_frames`` (video), ``default_pool_size``."""
    if name not in LOCAL_DATASETS:
        raise ValueError(f"unknown local dataset {name!r}; known: {', '.join(LOCAL_DATASETS)}")
    return LOCAL_DATASETS[name](root, **options)
