"""M2IV-style multimodal in-context vectors (unverified reading of arXiv 2504.04633)."""
from .losses import alignment_loss, many_shot_episode, split_demo_sets, synergy_loss, teacher_sets
from .method import M2IV, M2IVConfig, TeacherOutputs, generation_mask

__all__ = ["M2IV", "M2IVConfig", "TeacherOutputs", "generation_mask", "alignment_loss", "many_shot_episode",
           "split_demo_sets", "synergy_loss", "teacher_sets"]
