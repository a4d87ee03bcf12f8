"""Real datasets read from local files in their official formats (no downloads, no model code):
VQAv2 and OK-VQA, COCO captions (Karpathy split), MSVD / MSR-VTT captions and video QA.

Loaders return a :class:`LocalDataset` (items read lazily as :class:`~mmict_core.data.Example`);
:func:`local_task` wraps a dataset's splits as a :class:`~mmict_core.data.tasks.Task` whose
episodes draw demonstrations from the training split and queries from the evaluation split.
Video decoding needs PyAV (``pip install av``), imported only when a video is read.
"""
from .base import DatasetError, DatasetFormatError, DatasetNotFoundError, LocalDataset, Record, choose_subset
from .coco import load_coco_karpathy
from .msvd_msrvtt import load_msrvtt_captions, load_msvd_captions, load_video_qa, read_youtube_mapping
from .task import DATA_ROOT_ENV, LOCAL_DATASETS, LocalTask, local_task
from .video import VideoBackendMissing, read_frames, sample_indices
from .vqa import load_vqa

__all__ = [
    "DatasetError", "DatasetFormatError", "DatasetNotFoundError", "LocalDataset", "Record", "choose_subset",
    "load_coco_karpathy", "load_msrvtt_captions", "load_msvd_captions", "load_video_qa", "read_youtube_mapping",
    "DATA_ROOT_ENV", "LOCAL_DATASETS", "LocalTask", "local_task", "VideoBackendMissing", "read_frames",
    "sample_indices", "load_vqa",
]
