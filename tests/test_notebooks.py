"""The teaching notebooks: committed without outputs, and every one runs top to bottom (nbclient, a
kernel of this interpreter) with small parameters injected after its `parameters` cell, the way
papermill does."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from _helpers import interpreter_kernel

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ["01_icl", "02_mmict", "03_hificl", "04_m2iv_vlibrary", "05_quantisation", "06_vectors"]
THREADS = int(os.environ.get("MMICT_TEST_THREADS", "1"))
SMALL = dict(EPISODES=8, STEPS=3, SAMPLES=16, BATCH=4, THREADS=THREADS)
EXTRA = {  # per notebook: fewer settings where a notebook sweeps over a list
    "01_icl": dict(TASKS=["binding", "operator"], SHOTS=[0, 1, 4]),
    "04_m2iv_vlibrary": dict(M2IV_CONFIGS=[(2, 1), (4, 2)]),
}
MARK = "KERNEL-INTERPRETER"
TIMINGS: dict[str, float] = {}


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def defined_parameters(nb) -> set[str]:
    return set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", nb.cells[parameters_index(nb)].source, re.M))


def inject(nb, values: dict) -> nbformat.NotebookNode:
    """Insert an 'injected-parameters' cell right after the parameters cell (papermill style) setting
    those of ``values`` the notebook has; it also prints the kernel's interpreter so the test can
    check which Python ran the notebook."""
    names = defined_parameters(nb)
    src = "\n".join(f"{k} = {v!r}" for k, v in values.items() if k in names)
    src += f"\nimport sys\nprint({MARK!r}, sys.executable, sys.prefix, sep='|')"
    cell = nbformat.v4.new_code_cell(src)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(parameters_index(nb) + 1, cell)
    return nb


@pytest.fixture(scope="session")
def kernel_name(tmp_path_factory):
    """A kernelspec 'python3' whose argv is *this* interpreter, first on JUPYTER_PATH for the session."""
    with interpreter_kernel(tmp_path_factory.mktemp("jupyter"), "python3", "MMICT Studio (test)") as name:
        yield name


def run_notebook(name: str, values: dict, kernel: str, workdir: Path, timeout: int = 300) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = inject(fill_solutions(load(name)), values)
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(workdir)}})
    client.execute()
    nbformat.write(nb, workdir / f"{name}.out.ipynb")  # left in the temp dir for a look when something is off
    return nb


def fill_solutions(nb) -> nbformat.NotebookNode:
    """Each exercise cell (tagged 'exercise', ``metadata.exercise`` = its key) gets the worked solution,
    as a student who solved it would have written it."""
    from mmict_core.exercises import solution_source

    for c in nb.cells:
        if "exercise" in c.get("metadata", {}):
            c.source = solution_source(c.metadata["exercise"])
    return nb


def stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")


# ---------------------------------------------------------------- committed form


def test_every_notebook_is_listed():
    assert sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_are_stripped_and_parametrised(name):
    nb = load(name)
    nbformat.validate(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{name}: a code cell has outputs"
    defined = defined_parameters(nb)
    assert {"EPISODES", "THREADS", "SEED"} <= defined, f"{name}: parameters cell lacks {({'EPISODES', 'THREADS', 'SEED'} - defined)}"
    assert set(EXTRA.get(name, {})) <= defined, f"{name}: the test injects parameters the notebook does not have"
    if "STEPS" in defined:  # notebooks that train take the training sizes as parameters too
        assert {"SAMPLES", "BATCH"} <= defined
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "torch.set_num_threads(THREADS)" in code
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3, f"{name}: too little narration"


# ---------------------------------------------------------------- execution


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, kernel_name, tmp_path):
    t0 = time.perf_counter()
    nb = run_notebook(name, {**SMALL, **EXTRA.get(name, {})}, kernel_name, tmp_path)
    TIMINGS[name] = time.perf_counter() - t0
    text = stream_text(nb)
    line = next(ln for ln in text.splitlines() if ln.startswith(MARK))
    _, executable, prefix = line.split("|")
    assert executable == sys.executable and prefix == sys.prefix  # the kernel ran this interpreter
    assert all(o.output_type != "error" for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    checks = [ln for ln in text.splitlines() if ln[:2] in ("✓ ", "✗ ", "… ")]
    n_ex = sum("exercise" in c.get("metadata", {}) for c in nb.cells)
    assert len(checks) == n_ex and all(ln.startswith("✓") for ln in checks), checks  # the solutions pass
    # no irrelevant library notice (bitsandbytes' 4-bit remote-kernel warning, printed when peft
    # imported it), and no JS bundle in the saved widget state (an executed 03 weighed 25.6 MB)
    saved = nbformat.writes(nb)
    assert "gemm_4bit_forward" not in saved and "trust_remote_code" not in saved
    assert len(saved) < 3_000_000, f"{name}: the executed notebook weighs {len(saved):,} bytes"
    print(f"{name}: {TIMINGS[name]:.1f} s")


# ---------------------------------------------------------------- make notebooks


def test_make_notebooks_runs_as_root_and_saves_widget_state(tmp_path):
    """`make notebooks` passes --allow-root exactly when run as root (Jupyter refuses root without
    it) and installs the project's JupyterLab defaults, which save widget state into the notebook."""
    import json
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-n", "notebooks", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    lab = next(ln for ln in out.splitlines() if "jupyter lab" in ln)
    assert ("--allow-root" in lab) == (os.geteuid() == 0), lab
    assert f"{venv}/share/jupyter/lab/settings/overrides.json" in out
    overrides = json.loads((ROOT / "notebooks" / "jupyterlab" / "overrides.json").read_text())
    assert overrides["@jupyter-widgets/jupyterlab-manager:plugin"]["saveState"] is True
