# Two commands set everything up on a fresh machine:  make demo  |  make test
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmict-installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test eval notebooks install clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)

# torch first (the pinned CPU build); an unpinned torch would pull a multi-GB CUDA build
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The main job: the Gradio app on the teaching VLM (http://127.0.0.1:7860).
demo: $(STAMP)
	$(BIN)/mmict app

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

eval: $(STAMP)
	$(BIN)/mmict eval --task binding --shots 0,1,2,4,8 --episodes 300 --seed 0

# The teaching notebooks in JupyterLab, with the project's environment (its python3 kernel).
# JupyterLab's defaults for this venv (notebooks/jupyterlab/overrides.json): save widget state into the
# notebook, so the panels still show after the kernel is gone (a reload after a restart, a reopen).
# Jupyter refuses to run as root without --allow-root (containers, CI).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

$(LAB_OVERRIDES): notebooks/jupyterlab/overrides.json | $(STAMP)
	mkdir -p $(dir $@)
	cp $< $@

notebooks: $(STAMP) $(LAB_OVERRIDES)
	$(BIN)/jupyter lab $(ALLOW_ROOT) notebooks/

clean-venv:
	rm -rf $(VENV)

# Efficiency benchmarks on the teaching VLM (CPU, < 10 min; --quick ~30 s): benchmarks/results/report.md
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Section 4's measurement (hours of CPU; resumable): 66 training runs, one JSON each in
# benchmarks/results/data_efficiency/, then section 4 of report.md and its figures from them
.PHONY: bench-data
bench-data: $(STAMP)
	$(BIN)/python -m benchmarks.data_efficiency --jobs 2
	$(BIN)/python -m benchmarks.data_efficiency --summary --report benchmarks/results

# Real classes at >= 1 B parameters in 4-bit on this CPU (<= 40 min of measurements): benchmarks/results/realsize_cpu/
.PHONY: bench-realsize-cpu
bench-realsize-cpu: $(STAMP)
	PYTHON=$(BIN)/python bash benchmarks/cpu_realsize.sh $(BENCH_ARGS)
