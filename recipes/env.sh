# Sourced by recipes/train.sh and recipes/submit.sh: the environment both launchers need, set once.
# Sets ROOT (the checkout) and PYTHON (recipes/python.sh), exports PYTHONPATH, and picks W&B's mode as the
# Makefile does.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# As the Makefile: W&B online only with a key, offline otherwise.
if [[ -z "${WANDB_MODE:-}" ]]; then
  if [[ -n "${WANDB_API_KEY:-}" ]]; then export WANDB_MODE=online; else export WANDB_MODE=offline; fi
fi
source "$ROOT/recipes/python.sh"
cd "$ROOT"
