# ImageEdit-R1 stack. `make help` lists the targets. Every target that runs Python sets up .venv/ first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# One environment per machine. On a CPU/dev machine `make setup` makes .venv/ from requirements.txt
# (stamp .venv/.installed) and every target installs it first. On a GPU node `make setup-gpu` makes
# .venv/ from requirements-gpu.txt + flash-attn (stamp .venv/.installed-gpu; .venv/.building-gpu while
# it runs) and no target ever installs requirements.txt there, not even after a failed setup-gpu.
# PYTHON=/path/to/python, or an activated environment (VIRTUAL_ENV), is used as it is, with nothing
# installed.
BASE_PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
GPU_STAMP := $(VENV)/.installed-gpu
GPU_BUILDING := $(VENV)/.building-gpu
# The GPU environment (README "GPU node"): CPython 3.12, since verl 0.9.1's flash-attn for its fsdp extra
# is a prebuilt wheel for exactly flash-attn 2.8.3 / CUDA 13.0 / torch 2.11 / cp312 (the
# flash-attn-cu130torch211 source of verl's pyproject); PyPI has no flash-attn wheel at all.
# FLASH_ATTN=wheel (that wheel, or FLASH_ATTN_WHEEL=path/url of another), none (sdpa attention, see
# README), or build (compile against the torch installed: needs CUDA 13's nvcc, an hour or more).
GPU_BASE_PYTHON ?= python3.12
FLASH_ATTN ?= wheel
FLASH_ATTN_WHEEL ?= https://github.com/mjun0812/flash-attention-prebuild-wheels/releases/download/v0.9.4/flash_attn-2.8.3+cu130torch2.11-cp312-cp312-linux_x86_64.whl
ifneq ($(filter command line environment,$(origin PYTHON)),)
  PY := $(PYTHON)
  ENV_DEPS :=
else ifneq ($(and $(VIRTUAL_ENV),$(filter-out $(abspath $(VENV)),$(abspath $(VIRTUAL_ENV)))),)
  PY := $(VIRTUAL_ENV)/bin/python
  ENV_DEPS :=
else ifneq ($(wildcard $(GPU_BUILDING)),)
  PY := $(VENV)/bin/python
  ENV_DEPS := gpu-unfinished
else ifneq ($(wildcard $(GPU_STAMP)),)
  PY := $(VENV)/bin/python
  ENV_DEPS :=
else
  PY := $(VENV)/bin/python
  ENV_DEPS := $(STAMP)
endif

# Training launch knobs (see recipes/README.md); the default recipe is named once, in recipes/defaults.env.
include recipes/defaults.env
NODES ?= 1
GPUS ?= 8
RECIPE ?= $(DEFAULT_RECIPE)
ARGS ?=
CKPT ?=
OUT ?=

# Every Python target runs in the launch environment of recipes/env.sh (PYTHONPATH, HF offline unless
# HF_HUB_OFFLINE=0, W&B offline without a key, ...), defined there once for make, the launchers and Slurm.
RUN := bash recipes/env.sh

.PHONY: help setup setup-gpu doctor test test-slow test-cluster slurm lint style demo bench train submit export tiny clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	@if [ -f $(GPU_STAMP) ] || [ -f $(GPU_BUILDING) ]; then echo "error: $(VENV)/ is this node's GPU environment (make setup-gpu); requirements.txt would replace its torch/transformers. Use PYTHON=... for another environment." >&2; exit 2; fi
	@test -x $(VENV)/bin/python || $(BASE_PYTHON) -m venv $(VENV)
	@# pip 23's resolver backtracks for many minutes on verl's extras; a current pip resolves at once.
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q --upgrade "pip>=25"
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

# The "building" stamp comes first and goes last: a setup-gpu that fails or is killed leaves it, and then
# every Python target stops (gpu-unfinished) instead of installing the CPU stack over the GPU one.
$(GPU_STAMP): requirements-gpu.txt
	@if [ -f $(STAMP) ]; then echo "error: $(VENV)/ is the CPU/dev environment (make setup); a GPU node gets its own: rm -rf $(VENV) first, or a separate checkout." >&2; exit 2; fi
	@if [ -x $(VENV)/bin/python ] && [ ! -f $(GPU_BUILDING) ] && [ ! -f $(GPU_STAMP) ]; then echo "error: $(VENV)/ exists but no setup made it (no stamp): rm -rf $(VENV) first" >&2; exit 2; fi
	@case "$(FLASH_ATTN)" in wheel|none|build) ;; *) echo "error: FLASH_ATTN=$(FLASH_ATTN): wheel, none or build" >&2; exit 2;; esac
	@mkdir -p $(VENV) && touch $(GPU_BUILDING)
	@if [ ! -x $(VENV)/bin/python ]; then \
	  command -v $(GPU_BASE_PYTHON) >/dev/null || { echo "error: $(GPU_BASE_PYTHON) not found: the GPU environment is CPython 3.12 (verl's flash-attn wheel is cp312). Install it (uv python install 3.12; conda create -p ~/py312 python=3.12; module load python/3.12) and pass GPU_BASE_PYTHON=/path/to/python3.12" >&2; exit 2; }; \
	  $(GPU_BASE_PYTHON) -m venv $(VENV); fi
	$(VENV)/bin/python -m pip install --disable-pip-version-check -q --upgrade "pip>=25"
	$(VENV)/bin/python -m pip install --disable-pip-version-check -r requirements-gpu.txt
	@# flash-attn after torch: a wheel built for exactly this torch/CUDA/Python, or (build) compiled against it
	@# without build isolation, where its setup.py imports wheel/setuptools/packaging/psutil/ninja itself.
	@set -e; case "$(FLASH_ATTN)" in \
	  wheel) $(VENV)/bin/python -m pip install --disable-pip-version-check --no-deps "$(FLASH_ATTN_WHEEL)" ;; \
	  build) $(VENV)/bin/python -m pip install --disable-pip-version-check wheel setuptools packaging psutil ninja; \
	         $(VENV)/bin/python -m pip install --disable-pip-version-check --no-build-isolation --no-deps flash-attn==2.8.3 ;; \
	  none) echo "note: no flash-attn (FLASH_ATTN=none): train with the sdpa route of the README (make doctor says what it costs)" ;; \
	esac
	@if [ "$(FLASH_ATTN)" != none ]; then $(VENV)/bin/python -c "import flash_attn, flash_attn_2_cuda; print('flash-attn', flash_attn.__version__, 'imports')" \
	  || { echo "error: flash-attn does not import against this torch (a wheel for another torch/CUDA/Python?): FLASH_ATTN_WHEEL=<matching wheel> make setup-gpu, or FLASH_ATTN=none" >&2; exit 2; }; fi
	@touch $(GPU_STAMP) && rm -f $(GPU_BUILDING)

.PHONY: gpu-unfinished
gpu-unfinished:
	@echo "error: $(VENV)/ is a GPU environment whose make setup-gpu did not finish ($(GPU_BUILDING) is there): run make setup-gpu again (it picks up where it stopped), or rm -rf $(VENV). Nothing installs requirements.txt over it." >&2; exit 2

setup: $(ENV_DEPS) ## Create .venv/ with the CPU/dev install (idempotent; seconds when nothing changed)

setup-gpu: $(GPU_STAMP) ## GPU node: .venv/ on Python 3.12 from requirements-gpu.txt + a prebuilt flash-attn [FLASH_ATTN=wheel|none|build]

# `browser` first: a fresh clone's `make test` installs Chromium for the browser test as `make setup` does
# (root + apt-get), or says in one line at the start why that test will skip.
test: $(ENV_DEPS) browser ## Run the fast test suite (offline, CPU)
	$(RUN) $(PY) -m pytest -m "not slow and not cluster" --timeout=900 $(PYTEST_ARGS)

test-slow: $(ENV_DEPS) browser ## Run the slow tests too (a measured GRPO learning run on verl at the demo's sizes, ~30 min more)
	$(RUN) $(PY) -m pytest -m "not cluster" --timeout=3600 $(PYTEST_ARGS)

# Real multi-node runs on this machine (recipes/multinode.md): two Ray nodes through `make train` and
# `make submit`, a node lost mid-run, a checkpoint save killed; a local Slurm (two slurmd on this host,
# `make slurm` installs it as root) running recipes/slurm/train.slurm to completion and through a requeue.
test-cluster: $(ENV_DEPS) ## The multi-node tests (two Ray nodes, a local Slurm, verl's trainer), ~25 min
	$(RUN) $(PY) -m pytest -m cluster --timeout=1800 tests/test_cluster_ray.py tests/test_cluster_slurm.py $(PYTEST_ARGS)

slurm: ## Install Debian's slurm-wlm + munge for the Slurm tests (as root; skipped when present)
	bash recipes/slurm/local_cluster.sh install

lint: $(ENV_DEPS) ## ruff check + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

style: $(ENV_DEPS) ## Fix what ruff can fix and format the code
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

demo: $(ENV_DEPS) ## The whole loop on CPU: synthetic data -> cold start -> GRPO -> pipeline -> eval report (~36 min on 2 cores)
	$(RUN) $(PY) -m recipes.demo $(ARGS)

bench: $(ENV_DEPS) ## Benchmarks of every stage; results in outputs/bench/
	@set -e; for m in reward_fns data_prep recipes inference eval; do \
	  if [ -f $$m/bench.py ]; then echo "== $$m"; $(RUN) $(PY) -m $$m.bench; fi; done

doctor: $(ENV_DEPS) ## Preflight of a recipe here: versions, vLLM kwargs, GPUs, Ray cluster, image budget
	NODES=$(NODES) GPUS=$(GPUS) RECIPE=$(RECIPE) $(RUN) $(PY) -m recipes.doctor $(ARGS)

train: $(ENV_DEPS) ## GRPO on verl: make train NODES=1 GPUS=8 [RECIPE=..] [ARGS="hydra overrides"] [DRY_RUN=1]
	NODES=$(NODES) GPUS=$(GPUS) RECIPE=$(RECIPE) PYTHON=$(PY) bash recipes/train.sh $(ARGS)

submit: $(ENV_DEPS) ## Same job to a running Ray cluster (RAY_ADDRESS=http://head:8265)
	NODES=$(NODES) GPUS=$(GPUS) RECIPE=$(RECIPE) PYTHON=$(PY) bash recipes/submit.sh $(ARGS)

export: $(ENV_DEPS) ## Merge a verl FSDP checkpoint into a HF folder: make export CKPT=.../global_step_N [OUT=dir]
	CKPT=$(CKPT) OUT=$(OUT) PYTHON=$(PY) bash recipes/export.sh

tiny: $(ENV_DEPS) ## Build the tiny offline models into outputs/tiny (make tiny OUT=dir)
	$(RUN) $(PY) -m inference.tiny --out $(if $(OUT),$(OUT),outputs/tiny)

# The interactive app (app/, python -m app) and Debian's headless Chromium for its browser test
# (tests/test_app_browser.py). `make setup` runs `browser`: nothing when chromium and chromedriver are
# there, apt-get as root otherwise; without root or apt-get the browser test skips and says why.
.PHONY: app browser
setup: browser

app: $(ENV_DEPS) ## Editing app on http://127.0.0.1:7860 (ARGS="--llm-model DIR --editor ... --judge-model ...")
	$(RUN) $(PY) -m app $(ARGS)

browser: ## Install Debian's chromium + chromium-driver for the browser test (as root; skipped when present)
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "note: chromium/chromedriver missing and no root apt-get here: the browser test will skip" >&2; exit 0; fi; \
	echo "installing Debian's chromium + chromium-driver (for the browser test)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } \
	  || echo "warning: apt-get could not install chromium + chromium-driver: the browser test will skip" >&2

clean: ## Remove outputs (keeps .venv)
	rm -rf outputs wandb .pytest_cache .ruff_cache
