"""Numbers the method docs state as measured: each "## Measured" section names the checkpoint it was
measured on, which must be the shipped one, and the numbers it quotes from a committed probe JSON are
that JSON's (measured on the shipped backbone)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "methods"
PROBES = ROOT / "benchmarks" / "results" / "probes"


def _shipped_sha() -> str:
    return hashlib.sha256((ROOT / "assets" / "teaching-vlm" / "model.safetensors").read_bytes()).hexdigest()


def _measured(doc: Path) -> str:
    text = doc.read_text()
    start = text.index("## Measured")
    nxt = text.find("\n## ", start + 5)
    return text[start:] if nxt < 0 else text[start:nxt]


def test_every_measured_section_names_the_shipped_checkpoint():
    sha = _shipped_sha()
    docs = [d for d in sorted(DOCS.glob("*.md")) if "## Measured" in d.read_text()]
    assert len(docs) >= 4
    for d in docs:
        for head in re.findall(r"^## Measured.*$", d.read_text(), re.M):
            m = re.search(r"checkpoint `([0-9a-f]{12})`", head)
            assert m, f"{d.name}: '{head}' does not name the checkpoint it was measured on"
            assert sha.startswith(m.group(1)), f"{d.name}: measured on {m.group(1)}, the shipped model is {sha[:12]}: re-measure"


@pytest.fixture(scope="module")
def fingerprint():
    from mmict_core.backbones import load_backbone

    return load_backbone("teaching").fingerprint()


@pytest.mark.parametrize("doc,probe", [("task-vector.md", "task_vector_layers.json"), ("i2cl.md", "i2cl_operator.json")])
def test_compare_probe_numbers_are_the_json(doc, probe, fingerprint):
    data = json.loads((PROBES / probe).read_text())
    assert data["backbone"] == fingerprint
    section = _measured(DOCS / doc)
    for row in data["rows"]:
        assert f"{row['accuracy']:.3f}" in section, f"{doc}: {row['method']} {row['accuracy']:.3f} is not the number quoted"
    assert f"--json benchmarks/results/probes/{probe}" in section  # the command that wrote it


def test_mtv_probe_table_is_the_json(fingerprint):
    data = json.loads((PROBES / "mtv_many_shot.json").read_text())
    assert data["backbone"] == fingerprint
    section = _measured(DOCS / "mtv.md")
    for prompts, r in data["by_prompts"].items():
        row = (f"| {prompts} | {r['accuracy']:.3f} | {r['answer_is_a_dummy_answer']:.3f} | "
               f"{r['gold_is_a_dummy_answer']:.3f} | {r['copy_first_dummy_accuracy']:.3f} |")
        assert row in section, f"mtv.md lacks the probe's row {row}"
