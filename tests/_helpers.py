"""Checks and fixtures shared by the test files (method round trips, a Jupyter kernel of this interpreter)."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

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


@contextlib.contextmanager
def interpreter_kernel(base: Path, name: str, display_name: str):
    """A kernelspec ``name`` under ``base`` whose argv is *this* interpreter, first on JUPYTER_PATH
    while the block runs (restored after)."""
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(Path(base) / "kernels" / name,
                      overrides={"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                 "display_name": display_name})
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(base)] + ([old] if old else []))
    try:
        yield name
    finally:
        if old is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = old
