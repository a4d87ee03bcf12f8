"""`mmict vlibrary add` killed with SIGKILL at 20 random moments: every entry the library then lists
loads, and no hidden `.tmp-*` / `.trash-*` folder survives the next open."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mmict_core.backbones import load_backbone
from mmict_core.methods import get_method
from mmict_core.vlibrary import VLibrary

ROOT = Path(__file__).resolve().parents[1]
# one process adds entries in a loop (overwriting too), so each kill lands somewhere inside a write
WRITER = """
import sys
from mmict_core.vlibrary import VLibrary
lib = VLibrary(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    lib.add_folder(f"e{i % 3}", sys.argv[2], task="binding", overwrite=True)
    i += 1
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
def test_kill_9_during_add_leaves_only_loadable_entries(tmp_path):
    cls = get_method("lora")
    bb = load_backbone("teaching")
    src = tmp_path / "adapter"
    cls(bb, cls.config_class(r=2)).save(src)
    root = tmp_path / "lib"
    rng = np.random.default_rng(0)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for _ in range(20):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(src)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        assert p.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.0, 0.05)))
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    lib = VLibrary(root)  # the next open cleans up
    assert not [q.name for q in root.iterdir() if q.name.startswith(".")]
    names = [e["name"] for e in lib.list()]
    assert names, "some adds completed"
    for n in names:
        assert lib.load(n, bb).name == "lora"
