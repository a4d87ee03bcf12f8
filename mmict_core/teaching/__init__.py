"""Pretraining the teaching VLM: one recipe of stages (see :mod:`.recipe`), each stage a module."""
from .config import DEFAULT_MIX, PretrainConfig
from .recipe import STAGES, pretrain_teaching, stage_plan

__all__ = ["DEFAULT_MIX", "PretrainConfig", "STAGES", "pretrain_teaching", "stage_plan"]
