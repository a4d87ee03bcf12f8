"""What a benchmark run measured and where: the checkpoint's hash, the git commit, the machine."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = "model.safetensors"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint(folder: Path | None = None) -> dict:
    """{'path' (relative to the repository where inside it), 'sha256', 'bytes'} of the teaching VLM's weights."""
    if folder is None:
        from mmict_core.backbones import ASSETS_DIR as folder
    path = Path(folder) / WEIGHTS
    try:
        shown = str(path.resolve().relative_to(ROOT))
    except ValueError:
        shown = path.name
    if not path.is_file():
        return {"path": shown, "sha256": None, "bytes": None}
    return {"path": shown, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def git_state(root: Path = ROOT) -> dict:
    """{'commit', 'dirty'}: HEAD and whether tracked files differ from it (None where git is unavailable)."""
    def git(*args):
        try:
            r = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine() -> dict:
    import torch

    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def provenance() -> dict:
    return {"checkpoint": checkpoint(), "git": git_state(), "machine": machine()}
