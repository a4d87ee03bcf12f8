"""Tiny stand-ins for the benchmark datasets, written in their official file formats from ShapesWorld
scenes (whose words the tiny backbones' tokenizer knows), so a preset's whole pipeline -- loaders,
task, episodes, metric -- runs on CPU in seconds: ``mmict preset run NAME --tiny``.

``write_fixture(dataset, root)`` writes ``root`` in the layout ``local_task(dataset, root=root)``
reads (docs/datasets_and_metrics.md): VQAv2 / OK-VQA (questions + annotations JSON, COCO-named
JPEGs), COCO Karpathy (``dataset_coco.json``), MSVD captions (``AllVideoDescriptions.txt``,
``youtube_mapping.txt`` and short MPEG-4 videos; needs PyAV).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import make_episode

SIZES = {"train": 24, "val": 8}  # items per split (Karpathy: also restval 4 and test 8)
FIXTURE_DATASETS = ("vqav2", "okvqa", "coco-caption", "msvd-caption")


def _items(task: str, split: str, n: int, offset: int = 0):
    """(image, prompt, answer) of ``n`` ShapesWorld queries, deterministic."""
    for i in range(n):
        q = make_episode(task, 0, seed=7, index=offset + i, split="train" if split == "train" else "test").query
        yield q.images[0], q.prompt, q.answer


def _jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95)


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_vqa(root: Path, okvqa: bool = False) -> None:
    """Questions, annotations (ten answers each: the right one 7 times) and images, train and val."""
    prefix = "" if okvqa else "v2_"
    for split, n in SIZES.items():
        qs, anns = [], []
        for j, (img, prompt, answer) in enumerate(_items("shapes-vqa", split, n)):
            qid, image_id = (1000 if split == "train" else 5000) + j, (100 if split == "train" else 500) + j
            _jpeg(root / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}.jpg", img)
            qs.append({"image_id": image_id, "question": prompt, "question_id": qid})
            answers = [answer] * 7 + ["yes", "2", "red"]
            anns.append({"question_id": qid, "image_id": image_id, "question_type": "what", "answer_type": "other",
                         "multiple_choice_answer": answer,
                         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                                     for k, a in enumerate(answers)]})
        _json(root / f"{prefix}OpenEnded_mscoco_{split}2014_questions.json",
              {"data_subtype": f"{split}2014", "questions": qs})
        _json(root / f"{prefix}mscoco_{split}2014_annotations.json", {"annotations": anns})


def write_karpathy(root: Path) -> None:
    """``dataset_coco.json`` with train / restval / val / test images, two captions each."""
    images = []
    plan = [("train", "train2014", SIZES["train"]), ("restval", "val2014", 4), ("val", "val2014", SIZES["val"]),
            ("test", "val2014", SIZES["val"])]
    offset = 0
    for split, folder, n in plan:
        for img, _, caption in _items("shapes-caption", split, n, offset):
            name = f"COCO_{folder}_{offset:012d}.jpg"
            _jpeg(root / folder / name, img)
            short = " ".join(caption.split()[:4])
            images.append({"filepath": folder, "filename": name, "split": split, "cocoid": offset,
                           "sentences": [{"raw": caption}, {"raw": short}]})
            offset += 1
    _json(root / "dataset_coco.json", {"images": images, "dataset": "coco"})


def _video(path: Path, image: np.ndarray, frames: int = 4) -> None:
    import av  # noqa: PLC0415 - optional: only video fixtures need it

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = image.shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in range(frames):
            arr = np.roll(image, f, axis=1)  # the scene drifting sideways
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_msvd(root: Path) -> None:
    """MSVD captions: clips vid1.. (train), vid1201.. (val), vid1301.. (test) with two captions each."""
    from ..data.real import VideoBackendMissing

    try:
        import av  # noqa: F401
    except ImportError as exc:
        raise VideoBackendMissing("the MSVD fixture writes videos with PyAV: pip install av") from exc
    mapping, lines = [], []
    for split, first, n in (("train", 1, SIZES["train"]), ("val", 1201, 4), ("test", 1301, SIZES["val"])):
        for j, (img, _, caption) in enumerate(_items("shapes-caption", split, n)):
            clip = f"clip{first + j}_0_2"
            _video(root / "videos" / f"{clip}.mp4", img)
            mapping.append(f"{clip} vid{first + j}")
            lines += [f"{clip} {caption}", f"{clip} {' '.join(caption.split()[:4])}"]
    root.mkdir(parents=True, exist_ok=True)
    (root / "youtube_mapping.txt").write_text("\n".join(mapping) + "\n")
    (root / "AllVideoDescriptions.txt").write_text("# MSVD fixture\n" + "\n".join(lines) + "\n")


def write_fixture(dataset: str, root: str | Path) -> Path:
    """Write the tiny ``dataset`` under ``root`` (once: an existing fixture is reused)."""
    root = Path(root)
    if (root / ".mmict-fixture").is_file():
        return root
    writers = {"vqav2": write_vqa, "okvqa": lambda r: write_vqa(r, okvqa=True), "coco-caption": write_karpathy,
               "msvd-caption": write_msvd}
    if dataset not in writers:
        raise ValueError(f"no tiny fixture for dataset {dataset!r}; --tiny supports {', '.join(FIXTURE_DATASETS)}")
    writers[dataset](root)
    (root / ".mmict-fixture").write_text(dataset)
    return root
