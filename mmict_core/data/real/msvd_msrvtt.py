"""MSVD and MSR-VTT: video captioning and video QA from their common annotation files.

Supported formats
- Video QA (MSVD-QA, MSRVTT-QA; Xu et al. 2017): ``<split>_qa.json``, a list of
  ``{"question", "answer", "id", "video_id": 1}`` (or ``"video": "<file name>"``).  ``video_id`` N is
  the file ``vidN`` for MSVD (renamed through ``youtube_mapping.txt`` when given: lines
  ``<youtube clip> vidN``) and ``videoN`` for MSR-VTT.
- MSR-VTT captions: ``train_val_videodatainfo.json`` / ``test_videodatainfo.json``:
  ``{"videos": [{"video_id": "video0", "split": "train" | "validate" | "test"}],
  "sentences": [{"video_id": "video0", "caption": "..."}]}``.
- MSVD captions: ``AllVideoDescriptions.txt`` (lines ``<youtube clip> <caption>``, ``#`` comments)
  with ``youtube_mapping.txt`` for the standard split (vid1-1200 train, 1201-1300 val, 1301-1970 test).
Videos: ``<video_dir>/<name>.<mp4|avi|webm|mkv|mov|m4v>``; frames are sampled uniformly when an item
is read (:mod:`.video`, needs PyAV).
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from typing import Callable

from .base import (DatasetFormatError, LocalDataset, PathLike, Record, choose_subset, field_of, read_json,
                   require_dir, require_file)
from .video import find_video

VIDEO_CAPTION_PROMPT = "Describe the video in one sentence."
VIDEO_LAYOUT = """  <root>/
    MSVD-QA / MSRVTT-QA:  train_qa.json  val_qa.json  test_qa.json   (+ youtube_mapping.txt for MSVD)
    MSR-VTT captions:     train_val_videodatainfo.json  test_videodatainfo.json
    MSVD captions:        AllVideoDescriptions.txt  youtube_mapping.txt
    videos/<name>.mp4 (or .avi ...)   MSVD: <youtube clip>.avi or vidN.avi;  MSR-VTT: videoN.mp4"""
MSVD_SPLITS = {"train": range(1, 1201), "val": range(1201, 1301), "test": range(1301, 1971)}


def read_youtube_mapping(path: PathLike) -> dict[str, str]:
    """``{"vidN": "<youtube clip>"}`` from MSVD's ``youtube_mapping.txt``."""
    path = require_file(path, "MSVD youtube_mapping.txt", VIDEO_LAYOUT)
    out = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not re.fullmatch(r"vid\d+", parts[1]):
                raise DatasetFormatError(f"{path!r} line {n}: expected '<youtube clip> vidN', got {line.strip()!r}")
            out[parts[1]] = parts[0]
    return out


def _finder(video_dir: str) -> Callable[[str], str]:
    cache: dict[str, str] = {}

    def find(name: str) -> str:
        if name not in cache:
            cache[name] = find_video(video_dir, name)
        return cache[name]
    return find


def load_video_qa(qa_file: PathLike, video_dir: PathLike, *, name: str = "msvd-qa", id_format: str = "vid{}",
                  mapping_file: PathLike | None = None, subset: int | None = None, seed: int | None = None,
                  num_frames: int = 8) -> LocalDataset:
    """A MSVD-QA / MSRVTT-QA split.  ``id_format`` turns a numeric ``video_id`` into a file name
    (``"vid{}"`` for MSVD, ``"video{}"`` for MSR-VTT)."""
    path = os.fspath(qa_file)
    what = f"{name} QA file"
    items = read_json(path, what, VIDEO_LAYOUT)
    if not isinstance(items, list):
        raise DatasetFormatError(f"{what} {path!r}: expected a list of {{question, answer, video_id}} entries")
    find = _finder(require_dir(video_dir, f"{name} video folder", VIDEO_LAYOUT))
    mapping = read_youtube_mapping(mapping_file) if mapping_file is not None else {}
    records = []
    for i in choose_subset(len(items), subset, seed):
        it = items[i]
        if isinstance(it, dict) and "video" in it:
            video = str(it["video"])
        else:  # files may be named by number (vidN) or, through the mapping, by YouTube clip
            video = id_format.format(field_of(it, "video_id", path, what))
            if video in mapping and (os.path.isfile(find(mapping[video])) or not os.path.isfile(find(video))):
                video = mapping[video]
        answer = str(field_of(it, "answer", path, what))
        meta = {"video": video, "question_id": it.get("id", i), "label": answer}
        if "category_id" in it:
            meta["category_id"] = it["category_id"]
        records.append(Record([find(video)], str(field_of(it, "question", path, what)), [answer], meta, video=True))
    return LocalDataset(name, records, num_frames=num_frames, layout=VIDEO_LAYOUT)


def _caption_records(captions: dict[str, list[str]], order: list[str], find: Callable[[str], str], prompt: str,
                     subset: int | None, seed: int | None, names: dict[str, str] | None = None) -> list[Record]:
    names = names or {}
    return [Record([find(names.get(v, v))], prompt, captions[v], {"video": names.get(v, v)}, video=True)
            for v in (order[i] for i in choose_subset(len(order), subset, seed))]


def load_msrvtt_captions(annotation_file: PathLike, video_dir: PathLike, split: str = "test", *,
                         name: str = "msrvtt-caption", prompt: str = VIDEO_CAPTION_PROMPT,
                         subset: int | None = None, seed: int | None = None, num_frames: int = 8) -> LocalDataset:
    """One split (``"train"``, ``"val"``/``"validate"``, ``"test"``) of MSR-VTT's videodatainfo JSON."""
    split = {"val": "validate"}.get(split, split)
    if split not in ("train", "validate", "test"):
        raise ValueError(f"unknown MSR-VTT split {split!r}; use train, val or test")
    path = os.fspath(annotation_file)
    what = f"{name} videodatainfo file"
    data = read_json(path, what, VIDEO_LAYOUT)
    videos = [field_of(v, "video_id", path, what) for v in field_of(data, "videos", path, what)
              if field_of(v, "split", path, what) == split]
    captions: dict[str, list[str]] = defaultdict(list)
    for s in field_of(data, "sentences", path, what):
        captions[field_of(s, "video_id", path, what)].append(str(field_of(s, "caption", path, what)).strip())
    missing = [v for v in videos if not captions[v]]
    if missing:
        raise DatasetFormatError(f"{what} {path!r}: video {missing[0]} (and {len(missing) - 1} more) has no caption")
    find = _finder(require_dir(video_dir, f"{name} video folder", VIDEO_LAYOUT))
    return LocalDataset(name, _caption_records(captions, videos, find, prompt, subset, seed),
                        num_frames=num_frames, layout=VIDEO_LAYOUT)


def load_msvd_captions(descriptions_file: PathLike, video_dir: PathLike, split: str = "test", *,
                       mapping_file: PathLike | None = None, name: str = "msvd-caption",
                       prompt: str = VIDEO_CAPTION_PROMPT, subset: int | None = None, seed: int | None = None,
                       num_frames: int = 8) -> LocalDataset:
    """MSVD captions from ``AllVideoDescriptions.txt``.  ``split`` ``"train"``/``"val"``/``"test"``
    needs ``youtube_mapping.txt`` (standard split by vid number); ``"all"`` keeps every clip in file order.
    Video files may be named by YouTube clip (``<clip>.avi``) or by vid number (``vidN.avi``)."""
    if split not in (*MSVD_SPLITS, "all"):
        raise ValueError(f"unknown MSVD split {split!r}; use train, val, test or all")
    path = require_file(descriptions_file, f"{name} AllVideoDescriptions.txt", VIDEO_LAYOUT)
    captions: dict[str, list[str]] = defaultdict(list)
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            clip, _, caption = line.partition(" ")
            if not caption.strip():
                raise DatasetFormatError(f"{path!r} line {n}: expected '<youtube clip> <caption>', got {line!r}")
            captions[clip].append(caption.strip())
    video_dir = require_dir(video_dir, f"{name} video folder", VIDEO_LAYOUT)
    find = _finder(video_dir)
    if split == "all":
        return LocalDataset(name, _caption_records(captions, list(captions), find, prompt, subset, seed),
                            num_frames=num_frames, layout=VIDEO_LAYOUT)
    if mapping_file is None:
        raise ValueError(f"MSVD split {split!r} needs youtube_mapping.txt (mapping_file=...); or use split='all'")
    mapping = read_youtube_mapping(mapping_file)
    order = [mapping[f"vid{i}"] for i in MSVD_SPLITS[split] if f"vid{i}" in mapping and mapping[f"vid{i}"] in captions]
    if not order:
        raise DatasetFormatError(f"no clip of the MSVD {split} split (vid{MSVD_SPLITS[split].start}-"
                                 f"vid{MSVD_SPLITS[split].stop - 1}) has captions in {path!r}")
    # prefer files named by clip; fall back to vidN names
    by_vid = {clip: vid for vid, clip in mapping.items()}
    names = {c: c if os.path.isfile(find(c)) else by_vid[c] for c in order}
    return LocalDataset(name, _caption_records(captions, order, find, prompt, subset, seed, names),
                        num_frames=num_frames, layout=VIDEO_LAYOUT)
