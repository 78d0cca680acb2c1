"""Names of the reward and its components, shared by the reward function, the trainers' metric
logging and the reward-curve plots (one definition)."""

from __future__ import annotations

#: The paper's four rewards (section 2.2), in logging order.
REWARD_COMPONENTS: tuple[str, ...] = ("format", "action", "subject", "goal")
#: Key of the weighted overall reward in a reward dict (verl requires `score`).
SCORE_KEY = "score"
#: Prefix of per-step training metrics: `train/reward/score`, `train/reward/format`, ...
TRAIN_METRIC_PREFIX = "train/reward/"


def train_metric(component: str) -> str:
    """Metric name of one component (or `score`) averaged over a training step's rollouts."""
    return TRAIN_METRIC_PREFIX + component
