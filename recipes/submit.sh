#!/usr/bin/env bash
# The same job as `make train`, sent to a running Ray cluster: `make submit [RECIPE=..] [NODES=..]
# [GPUS=..] [ARGS=".."]` with RAY_ADDRESS=http://HEAD:8265 (default http://127.0.0.1:8265).
# `ray job submit` uploads the checkout as runtime_env working_dir (recipes/runtime_env.yaml: without
# .venv, outputs, wandb) and takes this shell's WANDB_*, HF_* variables along; it streams the job's
# logs and waits (SUBMIT_NO_WAIT=1 returns once accepted). DRY_RUN=1 prints and validates only.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "Usage: RAY_ADDRESS=http://HEAD:8265 NODES=1 GPUS=8 RECIPE=$DEFAULT_RECIPE bash recipes/submit.sh [hydra overrides]"
  exit 0
fi

cd "$ROOT"
FLAGS=()
[[ "${SUBMIT_NO_WAIT:-0}" != "0" ]] && FLAGS+=(--no-wait)
exec "$PYTHON" -m recipes.launch submit ${FLAGS[@]+"${FLAGS[@]}"} -- "$@"  # (bash < 4.4: an empty array is unbound under set -u)
