#!/usr/bin/env bash
# GRPO on this node: `make train NODES=1 GPUS=8 [RECIPE=..] [ARGS="hydra overrides"] [DRY_RUN=1]`.
# GPU recipes run verl's own `python -m verl.trainer.main_ppo --config-path pkg://recipes.config
# --config-name $RECIPE`; a recipe with trainer.device=cpu (imageedit_r1_tiny) runs the same verl
# trainer on this CPU (recipes/verl_cpu). A GPU recipe with no GPU stops at once and says so.
# DRY_RUN=1 prints the composed config and the exact command and runs verl's config validation (CPU).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "Usage: NODES=1 GPUS=8 RECIPE=$DEFAULT_RECIPE [DRY_RUN=1] bash recipes/train.sh [hydra overrides]"
  echo "Recipes: $(cd "$(dirname "$0")/config" && ls ./*.yaml | sed 's|^\./||; s|\.yaml$||' | tr '\n' ' ')"
  exit 0
fi

cd "$ROOT"
if [[ -z "${RAY_ADDRESS:-}" || "${DRY_RUN:-0}" != "0" ]]; then
  exec "$PYTHON" -m recipes.launch train -- "$@"
fi
# Joining a running cluster: recipes/node_watch.py stops the run within seconds of the cluster losing a
# node, naming it (a lost node does not always end verl's run: recipes/multinode.md); NODE_WATCH=0 turns
# it off. When the run fails, name the nodes the cluster lost (Ray's own error for a node lost mid-run is
# often an RPC error naming none); signals reach the trainer as before.
"$PYTHON" -m recipes.launch train -- "$@" &
TRAINER=$!
WATCH=""
if [[ "${NODE_WATCH:-1}" != "0" ]]; then
  "$PYTHON" -m recipes.node_watch --address "$RAY_ADDRESS" --pid "$TRAINER" &
  WATCH=$!
fi
trap 'kill -TERM "$TRAINER" 2>/dev/null' TERM INT
RC=0
wait "$TRAINER" || RC=$?
if ((RC > 128)) && kill -0 "$TRAINER" 2>/dev/null; then wait "$TRAINER" || RC=$?; fi  # woken by a trap
WATCHED=0
if [[ -n "$WATCH" ]]; then
  # it sees the trainer gone within its 2 s poll; one that cannot (stuck reaching the cluster) is stopped
  for _ in $(seq 50); do kill -0 "$WATCH" 2>/dev/null || break; sleep 0.2; done
  kill -TERM "$WATCH" 2>/dev/null || true
  wait "$WATCH" || WATCHED=$?  # 1: it stopped the run and named the lost node
fi
if ((RC != 0 && WATCHED != 1)); then
  "$PYTHON" -m recipes.doctor --address "$RAY_ADDRESS" --lost-nodes || true
fi
exit "$RC"
