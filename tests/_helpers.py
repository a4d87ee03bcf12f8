"""Checks shared by the method test files."""
from __future__ import annotations

import pytest
import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.methods import AdapterLoadError


def assert_round_trip(method, path, batch):
    """save -> load gives the same config, bit-identical tensors and logits; another backbone is refused."""
    cls, vlm = type(method), method.backbone
    method.save(path)
    loaded = cls.load(path, vlm)
    loaded.train(method.training)
    assert loaded.config == method.config
    for k, v in method.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        with method.attached():
            a = vlm.forward(batch)
        with loaded.attached():
            b = vlm.forward(batch)
    assert torch.equal(a, b)
    with pytest.raises(AdapterLoadError, match="another backbone"):
        cls.load(path, TeachingVLM.create(seed=1))
    return loaded
