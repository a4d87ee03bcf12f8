"""Local real-dataset loaders (mmict_core.data.real) on tiny fixtures written by the tests: VQAv2 /
OK-VQA format, COCO Karpathy captions, MSVD / MSR-VTT captions and video QA (PyAV), the LocalTask
episodes, subset determinism and the errors for missing or corrupt files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmict_core.data import Example, get_task, make_episode
from mmict_core.data.real import (DatasetError, DatasetFormatError, DatasetNotFoundError, LocalTask, VideoBackendMissing,
                                  choose_subset, load_coco_karpathy, load_msrvtt_captions, load_msvd_captions,
                                  load_video_qa, load_vqa, local_task, read_frames, sample_indices)

try:
    import av
except ImportError:  # pragma: no cover - exercised where PyAV is absent
    av = None
needs_av = pytest.mark.skipif(av is None, reason="PyAV (pip install av) is not installed: video decoding untested")


# ------------------------------------------------------------------------------------------------
# fixture writers


def jpeg(path, value, size=(10, 8)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, 40)).save(path, quality=95)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh)


def vqa_split(root, split, n, first_qid, okvqa=False, image_name="COCO_{s}2014_{i:012d}.jpg"):
    """n questions on n COCO images; question q's ten answers say f"ans{q}" 4 times, then others."""
    qs, anns = [], []
    for j in range(n):
        qid, image_id = first_qid + j, 100 + first_qid + j
        qs.append({"image_id": image_id, "question": f"what is {j}?", "question_id": qid})
        answers = [f"ans{qid}"] * 4 + ["two", "2", "yes", "no", "maybe", "red"]
        anns.append({"question_id": qid, "image_id": image_id, "question_type": "what is", "answer_type": "other",
                     "multiple_choice_answer": f"ans{qid}",
                     "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                                 for k, a in enumerate(answers)]})
        jpeg(os.path.join(root, f"{split}2014", image_name.format(s=split, i=image_id)), (j * 20) % 256)
    prefix = "" if okvqa else "v2_"
    write_json(os.path.join(root, f"{prefix}OpenEnded_mscoco_{split}2014_questions.json"),
               {"data_subtype": f"{split}2014", "questions": qs})
    write_json(os.path.join(root, f"{prefix}mscoco_{split}2014_annotations.json"), {"annotations": anns})


@pytest.fixture
def vqa_root(tmp_path):
    root = str(tmp_path / "vqav2")
    vqa_split(root, "train", 12, 1000)
    vqa_split(root, "val", 6, 5000)
    return root


def vqa_val(root, **kw):
    return load_vqa(os.path.join(root, "v2_OpenEnded_mscoco_val2014_questions.json"),
                    os.path.join(root, "v2_mscoco_val2014_annotations.json"), os.path.join(root, "val2014"), **kw)


@pytest.fixture
def karpathy_root(tmp_path):
    root = str(tmp_path / "coco")
    images = []
    for i, split in enumerate(["train", "train", "restval", "val", "val", "test"]):
        folder = "val2014" if split != "train" else "train2014"
        name = f"COCO_{folder}_{i:012d}.jpg"
        jpeg(os.path.join(root, folder, name), i * 30)
        images.append({"filepath": folder, "filename": name, "split": split, "cocoid": i,
                       "sentences": [{"raw": f"A picture number {i}. ", "tokens": []}, {"raw": f"image {i}"}]})
    write_json(os.path.join(root, "dataset_coco.json"), {"images": images, "dataset": "coco"})
    return root


N_VIDEO_FRAMES = 30


def write_video(path, n_frames=N_VIDEO_FRAMES, size=32):
    """A tiny MPEG-4 video whose frame i is a flat grey of level 8*i (so frames can be identified)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for i in range(n_frames):
            arr = np.full((size, size, 3), 8 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# ------------------------------------------------------------------------------------------------
# VQAv2 / OK-VQA


def test_vqa_items_keep_all_ten_answers_and_meta(vqa_root):
    ds = vqa_val(vqa_root)
    assert len(ds) == 6 and "6 items" in repr(ds)
    ex = ds[0]
    assert isinstance(ex, Example) and ex.task == "vqav2"
    assert ex.prompt == "what is 0?"
    assert len(ex.answers) == 10 and ex.answers[:4] == ["ans5000"] * 4 and ex.answer == "ans5000"
    assert ex.meta == {"question_id": 5000, "image_id": 5100, "multiple_choice_answer": "ans5000", "label": "ans5000",
                       "question_type": "what is", "answer_type": "other"}
    assert len(ex.images) == 1 and ex.images[0].shape == (8, 10, 3) and ex.images[0].dtype == np.uint8
    assert abs(int(ex.images[0][0, 0, 0]) - 0) <= 3  # red channel of image 0 = 0
    assert abs(int(ds[3].images[0][0, 0, 0]) - 60) <= 3
    assert [e.meta["question_id"] for e in ds[1:3]] == [5001, 5002]


def test_vqa_subsets_first_n_and_seeded(vqa_root):
    first = vqa_val(vqa_root, subset=3)
    assert [r.meta["question_id"] for r in first.records] == [5000, 5001, 5002]
    a = [r.meta["question_id"] for r in vqa_val(vqa_root, subset=3, seed=7).records]
    b = [r.meta["question_id"] for r in vqa_val(vqa_root, subset=3, seed=7).records]
    assert a == b and a == sorted(a) and len(set(a)) == 3
    others = {tuple(r.meta["question_id"] for r in vqa_val(vqa_root, subset=3, seed=s).records) for s in range(8)}
    assert len(others) > 1  # the seed matters
    assert len(vqa_val(vqa_root, subset=100)) == 6
    assert choose_subset(10, 4, seed=1) == choose_subset(10, 4, seed=1)
    assert vqa_val(vqa_root).subset(2, seed=3).records == vqa_val(vqa_root, subset=2, seed=3).records
    with pytest.raises(ValueError, match=">= 1"):
        vqa_val(vqa_root, subset=0)


def test_okvqa_names_and_coco2017_file_names(tmp_path):
    root = str(tmp_path / "okvqa")
    vqa_split(root, "val", 3, 7, okvqa=True, image_name="{i:012d}.jpg")
    ds = load_vqa(os.path.join(root, "OpenEnded_mscoco_val2014_questions.json"),
                  os.path.join(root, "mscoco_val2014_annotations.json"), os.path.join(root, "val2014"), name="okvqa")
    assert ds.records[0].media[0].endswith("000000000107.jpg")
    assert ds[2].images[0].shape == (8, 10, 3) and ds[2].task == "okvqa"


def test_vqa_without_annotations_gives_unlabelled_queries(vqa_root):
    ds = load_vqa(os.path.join(vqa_root, "v2_OpenEnded_mscoco_val2014_questions.json"), None,
                  os.path.join(vqa_root, "val2014"))
    assert ds[0].answers == [] and ds[0].answer == ""


def test_vqa_missing_and_corrupt_files_are_clear(vqa_root):
    with pytest.raises(DatasetNotFoundError, match="questions file not found at .*nope.json") as info:
        load_vqa(os.path.join(vqa_root, "nope.json"), None, os.path.join(vqa_root, "val2014"))
    assert "Expected layout" in str(info.value) and "COCO_<split>2014_000000XXXXXX.jpg" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="image folder not found: no folder at .*val2015"):
        load_vqa(os.path.join(vqa_root, "v2_OpenEnded_mscoco_val2014_questions.json"), None,
                 os.path.join(vqa_root, "val2015"))
    bad = os.path.join(vqa_root, "v2_mscoco_val2014_annotations.json")
    with open(bad, "w") as fh:
        fh.write('{"annotations": [{"question_id": 1,')
    with pytest.raises(DatasetFormatError, match=r"annotations file at .* is not valid JSON \(line 1"):
        vqa_val(vqa_root)
    write_json(bad, {"annotations": [{"question_id": 1}]})
    with pytest.raises(DatasetFormatError, match="question 5000 .* has no entry in the annotations"):
        vqa_val(vqa_root)
    write_json(bad, {"something": []})
    with pytest.raises(DatasetFormatError, match="has no 'annotations' field"):
        vqa_val(vqa_root)


def test_missing_or_corrupt_image_raises_on_access(vqa_root):
    os.remove(os.path.join(vqa_root, "val2014", "COCO_val2014_000000005101.jpg"))
    with open(os.path.join(vqa_root, "val2014", "COCO_val2014_000000005102.jpg"), "wb") as fh:
        fh.write(b"not a jpeg")
    ds = vqa_val(vqa_root)  # building the dataset reads no image
    assert ds[0].images[0].shape == (8, 10, 3)
    with pytest.raises(DatasetNotFoundError, match=r"image file missing: .*COCO_val2014_000000005101\.jpg"):
        ds[1]
    with pytest.raises(DatasetFormatError, match="not a readable image"):
        ds[2]
    assert ds.missing_files() == [os.path.join(vqa_root, "val2014", "COCO_val2014_000000005101.jpg")]


# ------------------------------------------------------------------------------------------------
# COCO Karpathy


def test_karpathy_splits_paths_and_captions(karpathy_root):
    ann = os.path.join(karpathy_root, "dataset_coco.json")
    val = load_coco_karpathy(ann, karpathy_root, "val")
    assert [r.meta["cocoid"] for r in val.records] == [3, 4]
    ex = val[0]
    assert ex.answers == ["A picture number 3.", "image 3"] and ex.prompt.startswith("Describe the image")
    assert ex.images[0].shape == (8, 10, 3) and abs(int(ex.images[0][0, 0, 0]) - 90) <= 3
    assert [r.meta["cocoid"] for r in load_coco_karpathy(ann, karpathy_root, "train").records] == [0, 1, 2]
    assert [r.meta["cocoid"] for r in load_coco_karpathy(ann, karpathy_root, "train-only").records] == [0, 1]
    assert len(load_coco_karpathy(ann, karpathy_root, "test")) == 1
    assert val.references() == [["A picture number 3.", "image 3"], ["A picture number 4.", "image 4"]]
    assert load_coco_karpathy(ann, karpathy_root, "train", subset=2, seed=1).records == \
        load_coco_karpathy(ann, karpathy_root, "train", subset=2, seed=1).records
    with pytest.raises(ValueError, match="unknown Karpathy split 'validation'"):
        load_coco_karpathy(ann, karpathy_root, "validation")
    with pytest.raises(DatasetNotFoundError, match="dataset_coco.json"):
        load_coco_karpathy(os.path.join(karpathy_root, "missing", "dataset_coco.json"), karpathy_root)


# ------------------------------------------------------------------------------------------------
# local datasets as tasks


def test_local_task_episodes_demos_from_train_queries_from_val_in_order(vqa_root):
    task = local_task("vqav2", root=vqa_root, support_size=None)
    assert isinstance(task, LocalTask) and task.metric == "vqa_accuracy" and task.max_new_tokens == 10
    val_ids = [r.meta["question_id"] for r in task.dataset("test").records]
    assert task.dataset("val") is task.dataset("test")  # one split file, read once
    for i in range(8):
        ep = make_episode(task, 3, seed=0, index=i, split="test")
        assert ep.query.meta["question_id"] == val_ids[i % 6]  # queries swept in order
        assert len(ep.demos) == 3 and all(1000 <= d.meta["question_id"] < 1012 for d in ep.demos)
        again = make_episode(task, 3, seed=0, index=i, split="test")
        assert [d.meta["question_id"] for d in again.demos] == [d.meta["question_id"] for d in ep.demos]
    # training episodes: the query is never one of its own demonstrations
    for i in range(12):
        ep = make_episode(task, 8, index=i, split="train", pool_size=11)
        assert ep.query.meta["question_id"] not in [d.meta["question_id"] for d in ep.demos]
    # without an index (Task.generate): a seeded random query, same guarantees
    pool, query, info = task.generate(np.random.default_rng(5), "test", 4)
    assert query.meta["question_id"] == val_ids[info["query_index"]] and len(pool) == 4
    # by name through the task registry, with a support subset
    small = get_task("vqav2", root=vqa_root, support_size=4, support_seed=1)
    assert len(small.support_set()) == 4
    ep = make_episode(small, 4, index=0, pool_size=32)
    assert sorted(d.meta["question_id"] for d in ep.demos) == sorted(r.meta["question_id"] for r in small.support_set().records)
    with pytest.raises(ValueError, match="asked for 5 demonstrations but the vqav2 episode pool holds only 4"):
        make_episode(small, 5, index=0)
    assert 0.0 <= small.chance <= 1.0


def test_local_task_root_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("MMICT_DATA_ROOT", raising=False)
    with pytest.raises(DatasetNotFoundError, match="give root="):
        local_task("okvqa")
    monkeypatch.setenv("MMICT_DATA_ROOT", str(tmp_path))
    task = local_task("okvqa")  # lazy: nothing read yet
    with pytest.raises(DatasetNotFoundError, match=r"okvqa.*OpenEnded_mscoco_val2014_questions\.json"):
        make_episode(task, 0)
    with pytest.raises(ValueError, match="unknown local dataset"):
        local_task("imagenet")
    with pytest.raises(ValueError, match="local datasets"):
        get_task("imagenet")


def test_coco_caption_task(karpathy_root):
    task = local_task("coco-caption", root=karpathy_root, support_size=None)
    assert task.metric == "cider" and task.max_new_tokens == 20 and task.chance == 0.0
    ep = make_episode(task, 2, index=1)
    assert ep.query.meta["cocoid"] == 4 and all(d.meta["cocoid"] in (0, 1, 2) for d in ep.demos)


# ------------------------------------------------------------------------------------------------
# video: frame sampling, loaders, optional PyAV


def test_sample_indices_are_segment_centres():
    # 30 frames, 4 segments of 7.5 frames: centres 3.75, 11.25, 18.75, 26.25 -> floor
    assert sample_indices(30, 4) == [3, 11, 18, 26]
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(3, 5) == [0, 0, 1, 2, 2]  # fewer frames than asked: some repeat
    assert sample_indices(1, 3) == [0, 0, 0]
    with pytest.raises(ValueError):
        sample_indices(0, 4)
    with pytest.raises(ValueError):
        sample_indices(10, 0)


@needs_av
def test_read_frames_samples_uniformly(tmp_path):
    path = str(tmp_path / "v.mp4")
    write_video(path)
    frames = read_frames(path, 4)
    assert len(frames) == 4 and all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in frames)
    levels = [float(f.mean()) for f in frames]
    for level, idx in zip(levels, sample_indices(N_VIDEO_FRAMES, 4)):
        assert abs(level - 8 * idx) < 4, (levels, idx)
    assert len(read_frames(path, 40)) == 40  # more than the video has: frames repeat


@needs_av
def test_video_errors(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(DatasetFormatError, match="cannot decode the video"):
        read_frames(str(bad), 4)
    with pytest.raises(DatasetNotFoundError, match="no video file"):
        read_frames(str(tmp_path / "none.mp4"), 4)


def test_video_without_pyav_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "v.mp4").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(VideoBackendMissing, match=r"pip install av.*mmict-studio\[video\]") as info:
        read_frames(str(tmp_path / "v.mp4"), 4)
    assert isinstance(info.value, ImportError) and isinstance(info.value, DatasetError)


def test_loaders_import_without_pyav():
    code = ("import sys; sys.modules['av'] = None; import mmict_core.data.real as r; "
            "r.sample_indices(10, 2); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.fixture
def msvd_root(tmp_path):
    root = str(tmp_path / "msvd")
    clips = ["clipA_1_5", "clipB_2_9", "clipC_0_4"]
    with open(os.path.join(_mk(root), "youtube_mapping.txt"), "w") as fh:
        fh.write("".join(f"{c} vid{i + 1}\n" for i, c in enumerate(clips)))
    write_json(os.path.join(root, "train_qa.json"), [
        {"answer": "dog", "id": 0, "question": "what runs?", "video_id": 1},
        {"answer": "cat", "id": 1, "question": "what sits?", "video_id": 3}])
    write_json(os.path.join(root, "test_qa.json"), [{"answer": "man", "id": 9, "question": "who?", "video": "clipB_2_9"}])
    write_json(os.path.join(root, "val_qa.json"), [])
    with open(os.path.join(root, "AllVideoDescriptions.txt"), "w") as fh:
        fh.write("# header\nclipA_1_5 a dog runs\nclipA_1_5 a dog is running\nclipB_2_9 a man talks\n")
    return root, clips


def _mk(path):
    os.makedirs(path, exist_ok=True)
    return path


def test_msvd_qa_and_caption_records(msvd_root):
    root, clips = msvd_root
    videos = os.path.join(root, "videos")
    _mk(videos)
    qa = load_video_qa(os.path.join(root, "train_qa.json"), videos, mapping_file=os.path.join(root, "youtube_mapping.txt"))
    assert [r.meta["video"] for r in qa.records] == ["clipA_1_5", "clipC_0_4"]  # vid1, vid3 through the mapping
    assert qa.records[0].answers == ["dog"] and qa.records[0].prompt == "what runs?" and qa.records[0].video
    plain = load_video_qa(os.path.join(root, "train_qa.json"), videos)
    assert [r.meta["video"] for r in plain.records] == ["vid1", "vid3"]
    caps = load_msvd_captions(os.path.join(root, "AllVideoDescriptions.txt"), videos, "all")
    assert [r.answers for r in caps.records] == [["a dog runs", "a dog is running"], ["a man talks"]]
    with pytest.raises(ValueError, match="needs youtube_mapping.txt"):
        load_msvd_captions(os.path.join(root, "AllVideoDescriptions.txt"), videos, "test")
    with pytest.raises(DatasetFormatError, match="no clip of the MSVD test split"):
        load_msvd_captions(os.path.join(root, "AllVideoDescriptions.txt"), videos, "test",
                           mapping_file=os.path.join(root, "youtube_mapping.txt"))
    train = load_msvd_captions(os.path.join(root, "AllVideoDescriptions.txt"), videos, "train",
                               mapping_file=os.path.join(root, "youtube_mapping.txt"))
    assert [r.meta["video"] for r in train.records] == ["vid1", "vid2"]  # no clip-named file: vidN names
    with pytest.raises(DatasetNotFoundError, match=r"video file missing: .*vid1\.mp4"):
        train[0]
    bad = os.path.join(root, "bad_qa.json")
    write_json(bad, {"not": "a list"})
    with pytest.raises(DatasetFormatError, match="expected a list"):
        load_video_qa(bad, videos)


@needs_av
def test_video_qa_task_reads_frames(msvd_root):
    root, clips = msvd_root
    for c in clips:
        write_video(os.path.join(root, "videos", f"{c}.mp4"), n_frames=12, size=16)
    task = local_task("msvd-qa", root=root, num_frames=3, support_size=None)
    assert task.metric == "accuracy"
    ep = make_episode(task, 2, index=0)
    assert ep.query.answers == ["man"] and len(ep.query.images) == 3 and ep.query.images[0].shape == (16, 16, 3)
    assert sorted(d.answer for d in ep.demos) == ["cat", "dog"] and all(len(d.images) == 3 for d in ep.demos)


@needs_av
def test_msrvtt_captions(tmp_path):
    root = str(tmp_path / "msrvtt")
    for i in range(3):
        write_video(os.path.join(root, "videos", f"video{i}.mp4"), n_frames=6, size=16)
    write_json(os.path.join(root, "train_val_videodatainfo.json"), {
        "videos": [{"video_id": "video0", "split": "train", "id": 0}, {"video_id": "video1", "split": "validate", "id": 1},
                   {"video_id": "video2", "split": "train", "id": 2}],
        "sentences": [{"video_id": "video0", "caption": "a cat", "sen_id": 0}, {"video_id": "video1", "caption": "a dog"},
                      {"video_id": "video2", "caption": "a car"}, {"video_id": "video0", "caption": "cat plays"}]})
    ann = os.path.join(root, "train_val_videodatainfo.json")
    train = load_msrvtt_captions(ann, os.path.join(root, "videos"), "train", num_frames=2)
    assert [r.answers for r in train.records] == [["a cat", "cat plays"], ["a car"]]
    ex = train[0]
    assert len(ex.images) == 2 and ex.prompt.startswith("Describe the video")
    assert [r.meta["video"] for r in load_msrvtt_captions(ann, os.path.join(root, "videos"), "val").records] == ["video1"]
    task = local_task("msrvtt-caption", root=root, support_size=None, num_frames=2)
    ep = make_episode(task, 1, index=0, split="val")
    assert ep.query.answers == ["a dog"] and ep.demos[0].meta["video"] in ("video0", "video2")
    with pytest.raises(DatasetFormatError, match="msrvtt-caption: the 'test' split has no items"):
        make_episode(task, 1, index=0, split="test")
