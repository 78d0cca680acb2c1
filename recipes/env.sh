# Sourced by recipes/train.sh and recipes/submit.sh: the environment both launchers need, set once.
# Sets ROOT (the checkout) and PYTHON, exports PYTHONPATH, and picks W&B's mode as the Makefile does.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# As the Makefile: W&B online only with a key, offline otherwise.
if [[ -z "${WANDB_MODE:-}" ]]; then
  if [[ -n "${WANDB_API_KEY:-}" ]]; then export WANDB_MODE=online; else export WANDB_MODE=offline; fi
fi
PYTHON="$ROOT/.venv/bin/python"
[[ -x "$PYTHON" ]] || PYTHON=python
cd "$ROOT"
