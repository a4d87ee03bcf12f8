"""$MMICT_TEACHING_DIR: another teaching-VLM folder becomes the default 'teaching' backbone everywhere (the CLI,
the app, the scripts, the benchmarks) and its library/ the default starter library -- how a checkpoint is measured
before it ships.  Checked in fresh interpreters, since the path is read once at import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json
from mmict_core import casestudy, paths
from mmict_core.backbones import ASSETS_DIR, load_backbone
print(json.dumps({"assets": str(ASSETS_DIR), "starter": str(casestudy.starter_library().root),
                  "fp": load_backbone("teaching").fingerprint(), "shipped": str(paths.SHIPPED_DIR)}))
"""


def _probe(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MMICT_TEACHING_DIR", "MMICT_STARTER_LIBRARY")}
    env.update(env_extra, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_teaching_dir_env_moves_the_default_backbone_and_starter_library(tmp_path):
    from mmict_core.backbones import TeachingVLM

    other = tmp_path / "other-tvlm"
    vlm = TeachingVLM.create(seed=7)  # a different model: its input embeddings (the fingerprint) differ
    vlm.save(other)
    default = _probe({})
    moved = _probe({"MMICT_TEACHING_DIR": str(other)})
    assert Path(default["assets"]) == Path(default["shipped"]) == ROOT / "assets" / "teaching-vlm"
    assert Path(moved["assets"]) == other.resolve() and Path(moved["starter"]) == other.resolve() / "library"
    assert moved["fp"] == vlm.fingerprint() != default["fp"]
    assert Path(default["starter"]) == ROOT / "assets" / "teaching-vlm" / "library"
