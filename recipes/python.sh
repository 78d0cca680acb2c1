# Sourced by the launchers (env.sh, export.sh, slurm/train.slurm) with ROOT set: the interpreter they
# run, chosen as the Makefile chooses it (one environment per machine): $PYTHON when set (make passes
# its choice), else an activated environment, else the checkout's .venv/ (CPU or GPU, whichever this
# machine was set up with), else python3 from PATH.
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then
    PYTHON="$VIRTUAL_ENV/bin/python"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then
    PYTHON="$ROOT/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi
