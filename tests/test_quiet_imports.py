"""No irrelevant library messages: importing bitsandbytes for LoRA (peft imports it) must not print
bitsandbytes' 4-bit remote-kernel warning, which a bare import prints on AVX512-BF16 hosts."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTICE = "gemm_4bit_forward"


def _stderr(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}).stderr


def test_lora_imports_bitsandbytes_without_the_4bit_kernel_notice():
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("peft")
    bare = _stderr("import bitsandbytes")
    if NOTICE not in bare:
        pytest.skip("this host's bitsandbytes prints no remote-kernel notice (no AVX512-BF16): nothing to silence")
    ours = _stderr("import torch\nfrom mmict_core.backbones import TeachingVLM\nfrom mmict_core.workbench import make_method\n"
                   "m = make_method(TeachingVLM.create(seed=0), 'lora')\nwith m.attached():\n    pass\n"
                   "import sys\nassert 'bitsandbytes' in sys.modules and 'peft' in sys.modules\nprint('imported', file=sys.stderr)")
    assert "imported" in ours, ours[-2000:]
    assert NOTICE not in ours, ours[-2000:]
