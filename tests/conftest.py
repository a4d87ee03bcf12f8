import os

import pytest
import torch

from mmict_core.backbones import TeachingVLM

# MMICT_TEST_THREADS=1 keeps the suite from starving a training job running beside it.
if os.environ.get("MMICT_TEST_THREADS"):
    torch.set_num_threads(int(os.environ["MMICT_TEST_THREADS"]))


@pytest.fixture(scope="module")
def vlm():
    """A fresh, randomly initialised teaching VLM (fast; one per test module)."""
    return TeachingVLM.create(seed=0)


@pytest.fixture(scope="module")
def saved(vlm, tmp_path_factory):
    """``vlm`` saved to a folder, for reloading (e.g. quantised)."""
    path = tmp_path_factory.mktemp("tvlm")
    vlm.save(path)
    return path


def load_script(name: str):
    """The module of ``scripts/<name>.py`` (scripts are not a package; tests import their functions)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
