# The launch environment, defined once. Every route goes through it:
#   the Makefile runs each Python target as `bash recipes/env.sh CMD ...` (CMD in this environment);
#   recipes/train.sh, submit.sh, export.sh and slurm/train.slurm source it;
#   `python -m recipes.launch` (and so make demo / make bench) applies it to itself (launch.launch_environment).
# It sets ROOT (the checkout), the launch defaults of recipes/defaults.env (DEFAULT_RECIPE) and PYTHON,
# and exports what the trainer's processes need. A value already in the environment wins; applying it
# twice changes nothing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/recipes/defaults.env"

# The checkout is importable as is (reward_fns, data_prep, inference, eval, recipes), in Ray workers too.
case ":${PYTHONPATH:-}:" in
  *":$ROOT:"*) ;;
  *) export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
# No download unless asked for: our machines have no model hub, and on a cluster every node would fetch
# the weights itself. Pre-download them (`huggingface-cli download`, a shared HF_HOME) or set
# HF_HUB_OFFLINE=0; the preflight (`make doctor`, before every launch) names a model that is missing.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-$HF_HUB_OFFLINE}"
export HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-$HF_HUB_OFFLINE}"
# W&B online only with a key (wandb refuses to start without one otherwise), offline else.
if [[ -z "${WANDB_MODE:-}" ]]; then
  if [[ -n "${WANDB_API_KEY:-}" ]]; then export WANDB_MODE=online; else export WANDB_MODE=offline; fi
fi
# tokenizers warns, and may deadlock, in every process Ray forks after a tokenizer was used
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"

# The interpreter, chosen as the Makefile chooses it (one environment per machine): $PYTHON when set
# (make passes its choice), else an activated environment, else the checkout's .venv/ (CPU or GPU,
# whichever this machine was set up with), else python3 from PATH.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi

# Run as a command (`bash recipes/env.sh CMD ...`): CMD in this environment.
if [[ "${BASH_SOURCE[0]}" == "$0" && $# -gt 0 ]]; then
  exec "$@"
fi
