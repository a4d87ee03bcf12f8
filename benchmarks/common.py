"""Shared pieces of the benchmark sections: backbones, episodes, one timed query."""
from __future__ import annotations

from typing import Callable, ContextManager

import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.data import Episode, get_task, make_episode
from mmict_core.methods import Method, create_method


def task_of(settings):
    return get_task(settings.task, **({"fixed_binding": True} if settings.fixed_binding and settings.task == "binding" else {}))


def task_options(settings) -> dict:
    return {"fixed_binding": True} if settings.fixed_binding and settings.task == "binding" else {}


def episode(settings, k: int, index: int, split: str = "test") -> Episode:
    t = task_of(settings)
    return make_episode(t, k, seed=settings.seed, index=index, split=split, pool_size=max(t.default_pool_size, k))


def scaled_backbone(seed: int = 0, **sizes) -> TeachingVLM:
    """A freshly initialised teaching VLM with a larger LM (random weights, frozen)."""
    bb = TeachingVLM.create(seed=seed, **sizes)
    bb.model.requires_grad_(False)
    bb.model.eval()
    return bb


def lm_parameters(backbone) -> int:
    return sum(p.numel() for p in backbone.language_model.parameters())


def fresh_method(backbone, name: str, **overrides) -> Method:
    """A freshly initialised adapter (inference costs do not depend on training)."""
    return create_method(name, backbone, **overrides)


def generate_fixed(backbone, batch, new_tokens: int) -> torch.Tensor:
    """Greedy decoding of exactly ``new_tokens`` tokens (EOS does not stop it early)."""
    return backbone.language_model.generate(
        inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, do_sample=False, num_beams=1, eos_token_id=backbone.eos_token_id,
        pad_token_id=backbone.pad_token_id)


def assemble(backbone, method: Method, episodes: list[Episode]):
    """The left-padded generation input ``method`` (plain ICL: the registered ``icl``) builds for ``episodes``."""
    return method.batch(episodes, with_answer=False, padding_side="left")


def query_fn(backbone, method: Method, episodes: list[Episode], new_tokens: int) -> Callable[[int], None]:
    """fn(round): assemble episode ``round % len(episodes)`` (image encoding included) and decode
    ``new_tokens`` tokens — one query, as a user of the method runs it."""

    def run(i: int) -> None:
        with torch.no_grad():
            generate_fixed(backbone, assemble(backbone, method, [episodes[i % len(episodes)]]), new_tokens)

    return run


def context_of(method: Method, merged: bool = False) -> Callable[[], ContextManager]:
    """The context a configuration runs in: attached (plain ICL attaches nothing) or LoRA merged."""
    if merged:
        return method.merged
    return method.attached
