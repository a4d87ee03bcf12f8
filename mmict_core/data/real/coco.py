"""COCO captions in the Karpathy split (``dataset_coco.json``).

File: ``{"images": [{"filepath": "val2014", "filename": "COCO_val2014_000000391895.jpg",
"split": "train" | "restval" | "val" | "test", "cocoid": 391895, "sentences": [{"raw": "..."}]}]}``.
Image path: ``<image_root>/<filepath>/<filename>``.  Each :class:`Example` has the ~5 raw reference
captions as ``answers`` (the first is the training target, as in the MimIC protocol) and
``meta`` ``cocoid``, ``split``.
"""
from __future__ import annotations

import os

from .base import DatasetFormatError, LocalDataset, PathLike, Record, choose_subset, field_of, read_json, require_dir

CAPTION_PROMPT = "Describe the image in one sentence."
KARPATHY_LAYOUT = """  <root>/
    dataset_coco.json                 (Karpathy split: images[] with filepath, filename, split, sentences[].raw)
    train2014/COCO_train2014_*.jpg
    val2014/COCO_val2014_*.jpg"""
SPLIT_NAMES = {"train": ("train", "restval"), "train-only": ("train",), "restval": ("restval",),
               "val": ("val",), "test": ("test",)}


def load_coco_karpathy(annotation_file: PathLike, image_root: PathLike, split: str = "val", *,
                       name: str = "coco-caption", prompt: str = CAPTION_PROMPT, subset: int | None = None,
                       seed: int | None = None) -> LocalDataset:
    """One split of the Karpathy COCO captions.  ``split``: ``"train"`` (train + restval, the usual
    113k training images), ``"train-only"``, ``"restval"``, ``"val"`` or ``"test"`` (5k each)."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"unknown Karpathy split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
    path = os.fspath(annotation_file)
    what = f"{name} Karpathy split file"
    images = field_of(read_json(path, what, KARPATHY_LAYOUT), "images", path, what)
    if not isinstance(images, list):
        raise DatasetFormatError(f"{what} {path!r}: 'images' must be a list")
    image_root = require_dir(image_root, f"{name} image root", KARPATHY_LAYOUT)
    chosen = [im for im in images if field_of(im, "split", path, what) in SPLIT_NAMES[split]]
    records = []
    for i in choose_subset(len(chosen), subset, seed):
        im = chosen[i]
        file = os.path.join(image_root, im.get("filepath", ""), field_of(im, "filename", path, what))
        caps = [str(field_of(s, "raw", path, what)).strip() for s in field_of(im, "sentences", path, what)]
        if not caps:
            raise DatasetFormatError(f"{what} {path!r}: image {im['filename']} has no sentences")
        records.append(Record([file], prompt, caps, {"cocoid": im.get("cocoid"), "split": im["split"]}))
    return LocalDataset(name, records, layout=KARPATHY_LAYOUT)
