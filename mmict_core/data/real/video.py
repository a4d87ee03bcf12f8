"""Uniform frame sampling from video files with PyAV (an optional dependency: ``pip install av``).

Frames are taken at the centres of ``n`` equal segments of the video, the usual protocol for MSVD
and MSR-VTT: frame index ``floor((i + 0.5) * T / n)`` for i = 0..n-1 (T = number of frames; when
T < n some frames repeat).  This module imports ``av`` only when a video is read."""
from __future__ import annotations

import os

import numpy as np

from .base import DatasetError, DatasetFormatError, DatasetNotFoundError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


class VideoBackendMissing(DatasetError, ImportError):
    """PyAV is not installed."""


def sample_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread uniformly over ``total`` frames (segment centres)."""
    if total < 1:
        raise ValueError(f"a video needs at least one frame, got {total}")
    if n < 1:
        raise ValueError(f"the number of frames to sample must be >= 1, got {n}")
    return [min(total - 1, int((i + 0.5) * total / n)) for i in range(n)]


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise VideoBackendMissing("reading video files needs PyAV, which is not installed: "
                                  "pip install av   (or: pip install 'mmict-studio[video]')") from exc
    return av


def _decode(av, path: str, wanted: set[int] | None) -> tuple[int, dict[int, np.ndarray]]:
    """Decode the first video stream; return (frames decoded, {index: RGB array} for ``wanted``)."""
    frames: dict[int, np.ndarray] = {}
    count = 0
    with av.open(path) as container:
        if not container.streams.video:
            raise DatasetFormatError(f"{path!r} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if wanted is None or count in wanted:
                frames[count] = frame.to_ndarray(format="rgb24")
            count += 1
    return count, frames


def count_frames(path: str) -> int:
    """The number of frames in the header, or counted by decoding when the header has none."""
    av = _import_av()
    with av.open(path) as container:
        if not container.streams.video:
            raise DatasetFormatError(f"{path!r} has no video stream")
        declared = int(container.streams.video[0].frames or 0)
    return declared if declared > 0 else _decode(av, path, set())[0]


def read_frames(path: str | os.PathLike, num_frames: int = 8) -> list[np.ndarray]:
    """``num_frames`` uniformly sampled frames of the video at ``path``, as (H, W, 3) uint8 arrays."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"no video file at {path!r}")
    av = _import_av()
    try:
        total = count_frames(path)
        idx = sample_indices(total, num_frames)
        decoded, frames = _decode(av, path, set(idx))
        if decoded < total:  # the header over-counted: sample again over the frames that exist
            idx = sample_indices(decoded, num_frames)
            decoded, frames = _decode(av, path, set(idx))
    except (av.error.FFmpegError, ValueError) as exc:  # type: ignore[attr-defined]
        if isinstance(exc, DatasetError):
            raise
        raise DatasetFormatError(f"cannot decode the video {path!r} ({exc}); is it a complete video file?") from exc
    return [frames[i] for i in idx]


def find_video(video_dir: str, name: str) -> str:
    """The path of video ``name`` (with or without its extension) in ``video_dir``; when no file
    exists, the ``.mp4`` path (the error is raised when the video is read)."""
    base = os.path.join(video_dir, name)
    if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
        return base
    for ext in VIDEO_EXTENSIONS:
        if os.path.isfile(base + ext):
            return base + ext
    return base + ".mp4"
