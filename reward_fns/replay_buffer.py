"""Per-component reward curves during verl 0.9.1 training (paper Figure 3), and the fraction of GRPO
groups with no learning signal.

verl 0.9.1 logs the reward dict's extra keys (format, action, ...) only at validation. Every training
step, though, the v1 trainer asks its replay buffer for the step's batch and merges the metrics dict
the buffer returns into the step's metrics (`PPOTrainer._step_once`: `batch, off_policy_metrics =
self.replay_buffer.sample(...)`). The buffer class is pluggable by file path, so the least invasive
hook is a ReplayBuffer subclass that, after the normal sampling, reads the selected trajectories'
`extra_fields.reward_extra_info` (written by the reward loop, as verl's own DAPO filter reads it) and
adds the batch means as `train/reward/<component>`:

    trainer.v1.sampler.custom_sampler.path=reward_fns/replay_buffer.py
    trainer.v1.sampler.custom_sampler.name=RewardComponentReplayBuffer        # trainer.v1.trainer_mode=sync
    trainer.v1.sampler.custom_sampler.name=RewardComponentReplayBufferAsync   # the async trainer modes

Scope: the rule-based reward computed in the agent loop (no colocated reward model) with the v1
trainer (`trainer.use_v1=true`, verl's default). verl passes a custom sampler fewer constructor
arguments than its built-in one, so DAPO group filtering (`algorithm.filter_groups`) is off with it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

try:
    import reward_fns.components  # noqa: F401
except ImportError:  # loaded by file path from a process whose sys.path lacks the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import transfer_queue as tq  # noqa: E402
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync  # noqa: E402

from reward_fns.components import REWARD_COMPONENTS, SCORE_KEY, train_metric  # noqa: E402

#: Reward-dict keys averaged into training metrics each step.
LOGGED_KEYS: tuple[str, ...] = (SCORE_KEY, *REWARD_COMPONENTS)
#: Partition of the TransferQueue that holds training (not validation) trajectories.
TRAIN_PARTITION = "train"
#: Fraction of the step's GRPO groups (one prompt's n rollouts) whose scores are all equal: their
#: advantages are all 0, so they teach nothing. The first thing to read when a run does not learn.
ZERO_VARIANCE_METRIC = "train/grpo/zero_variance_group_fraction"


def reward_component_means(
    extra_fields: Iterable[Any], keys: Iterable[str] = LOGGED_KEYS
) -> dict[str, float]:
    """Means of the reward-dict keys over trajectories, as `train/reward/<key>` metrics.

    Each element is one trajectory's `extra_fields` (a dict, or a tensordict NonTensorData holding
    one); a trajectory without a key does not count towards that key's mean."""
    keys = tuple(keys)
    sums = dict.fromkeys(keys, 0.0)
    counts = dict.fromkeys(keys, 0)
    for value in extra_fields:
        info = _reward_info(value)
        if info is None:
            continue
        for key in keys:
            if key in info and info[key] is not None:
                sums[key] += float(info[key])
                counts[key] += 1
    return {train_metric(k): sums[k] / counts[k] for k in keys if counts[k]}


def _reward_info(value: Any) -> Mapping[str, Any] | None:
    fields = getattr(value, "data", value)
    info = fields.get("reward_extra_info") if isinstance(fields, Mapping) else None
    return info if isinstance(info, Mapping) else None


def zero_variance_group_fraction(keys: Iterable[str], extra_fields: Iterable[Any]) -> dict[str, float]:
    """`ZERO_VARIANCE_METRIC` over trajectories keyed `{uid}_{session}_{index}` (verl's replay buffer
    keys; the uid names the prompt, so one uid is one GRPO group); empty when no score is present."""
    scores: dict[str, list[float]] = {}
    for key, value in zip(keys, extra_fields, strict=True):
        info = _reward_info(value)
        if info is not None and info.get(SCORE_KEY) is not None:
            scores.setdefault(str(key).split("_")[0], []).append(float(info[SCORE_KEY]))
    groups = [g for g in scores.values() if len(g) > 1]
    if not groups:
        return {}
    flat = sum(1 for g in groups if max(g) - min(g) <= 1e-9)
    return {ZERO_VARIANCE_METRIC: flat / len(groups)}


class RewardComponentMetrics:
    """Mixin for verl's replay buffers: training batches also report reward component means.

    `trainer.v1.sampler.sampler_kwargs.poll_interval` sets how often the buffer checks for finished
    rollouts (verl's default 2 s, `replay_buffer.py:144`, rounds every generation of a tiny CPU model
    up to a multiple of 2 s; the CPU cluster group sets 0.05)."""

    def __init__(self, *args: Any, sampler_kwargs: Any = None, **kwargs: Any) -> None:
        options = dict(sampler_kwargs or {})
        poll = options.pop("poll_interval", None)
        if poll is not None:
            kwargs["poll_interval"] = float(poll)
        super().__init__(*args, sampler_kwargs=options, **kwargs)

    def sample(self, global_steps: int, partition_id: str, batch_size: int):
        batch, metrics = super().sample(global_steps, partition_id, batch_size)
        if partition_id == TRAIN_PARTITION and batch.keys:
            data = tq.kv_batch_get(keys=batch.keys, partition_id=partition_id, select_fields=["extra_fields"])
            extra = list(data["extra_fields"])
            metrics = {
                **metrics,
                **reward_component_means(extra),
                **zero_variance_group_fraction(batch.keys, extra),
            }
        return batch, metrics


class RewardComponentReplayBuffer(RewardComponentMetrics, ReplayBuffer):
    """verl's sync replay buffer plus `train/reward/*` metrics (trainer.v1.trainer_mode=sync)."""


class RewardComponentReplayBufferAsync(RewardComponentMetrics, ReplayBufferAsync):
    """verl's async replay buffer plus `train/reward/*` metrics (colocate_async / separate_async)."""
