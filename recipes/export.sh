#!/usr/bin/env bash
# Merge a verl FSDP checkpoint into a HuggingFace folder that vLLM and transformers load:
#   make export CKPT=outputs/checkpoints/imageedit_r1/qwen2_5_vl_7b_grpo/global_step_60 [OUT=dir]
# CKPT is a global_step_N folder, its actor/ folder, or the run's checkpoint folder (then the step in
# latest_checkpointed_iteration.txt). Wraps `python -m verl.model_merger merge --backend fsdp
# --local_dir CKPT/actor --target_dir OUT` (CPU is enough). OUT defaults to global_step_N/huggingface_merged;
# it appears only when the merge succeeded. The processor gets the image bound training used
# (recipes/image_bound.py; MIN_PIXELS/MAX_PIXELS for a checkpoint without the record). CPU runs
# (recipes/verl_cpu) write the same layout.
set -euo pipefail

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "Usage: CKPT=<verl checkpoint> [OUT=<hf folder>] bash recipes/export.sh   (or: bash recipes/export.sh CKPT [OUT])"
}
die() { echo "error: $*" >&2; exit 2; }

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi
CKPT="${1:-${CKPT:-}}"
OUT="${2:-${OUT:-}}"
[[ -n "$CKPT" ]] || { usage >&2; die "CKPT is not set: name a verl checkpoint (…/global_step_N)"; }
[[ -d "$CKPT" ]] || die "checkpoint folder not found: $CKPT"

CKPT="$(cd "$CKPT" && pwd)"
if [[ -f "$CKPT/latest_checkpointed_iteration.txt" ]]; then  # the run's checkpoint root
  STEP="$(tr -d '[:space:]' < "$CKPT/latest_checkpointed_iteration.txt")"
  CKPT="$CKPT/global_step_$STEP"
  [[ -d "$CKPT" ]] || die "latest_checkpointed_iteration.txt names step $STEP but $CKPT does not exist"
fi
if [[ -d "$CKPT/actor" ]]; then ACTOR="$CKPT/actor"; else ACTOR="$CKPT"; fi
[[ -f "$ACTOR/fsdp_config.json" ]] \
  || die "not a verl FSDP actor checkpoint (no fsdp_config.json): $ACTOR"
compgen -G "$ACTOR/model_world_size_*_rank_*.pt" > /dev/null \
  || die "no model shards (model_world_size_*_rank_*.pt) in $ACTOR: was it saved with checkpoint.save_contents=[model,...]?"
[[ -d "$ACTOR/huggingface" ]] || die "no huggingface/ (config + processor) folder in $ACTOR"

[[ -n "$OUT" ]] || OUT="$(dirname "$ACTOR")/huggingface_merged"
[[ -e "$OUT" ]] && die "output folder exists, not overwriting: $OUT"
mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
PARTIAL="$OUT.partial"
rm -rf "$PARTIAL"
trap 'rm -rf "$PARTIAL"' EXIT  # a failed merge leaves nothing behind

source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

echo "+ $PYTHON -m verl.model_merger merge --backend fsdp --local_dir $ACTOR --target_dir $OUT" >&2
"$PYTHON" -m verl.model_merger merge --backend fsdp --local_dir "$ACTOR" --target_dir "$PARTIAL"
# verl saved the processor without the recipe's image bound: put the training's bound back into it
"$PYTHON" -m recipes.image_bound apply "$PARTIAL" --checkpoint "$ACTOR"
mv "$PARTIAL" "$OUT"
echo "$OUT"
