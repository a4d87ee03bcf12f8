"""Every registered method x the teaching VLM in fp32, 8-bit and 4-bit: the method contract
(attach/detach bit-identical also on an exception, gradients on the adapter only, save/load, a
trainer step, the parameter count).  See tests/method_contract.py."""
from __future__ import annotations

import pytest

from method_contract import check_contract
from mmict_core.backbones import TeachingVLM
from mmict_core.methods import method_names

QUANTS = ("none", "8bit", "4bit")


@pytest.fixture(scope="module")
def backbones(vlm, saved):
    cache = {"none": vlm}

    def get(quant: str):
        if quant not in cache:
            cache[quant] = TeachingVLM.load(saved, quant=quant)
        return cache[quant]
    return get


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("name", method_names())
def test_method_contract(backbones, name, quant, tmp_path):
    check_contract(name, backbones(quant), tmp_path / "adapter")
