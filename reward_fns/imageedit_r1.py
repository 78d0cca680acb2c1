"""The ImageEdit-R1 decomposition reward (paper section 2.2): format reward plus F1 on actions,
subjects and goals. One file, two entries:

- verl: `reward.custom_reward_function.path=reward_fns/imageedit_r1.py`, `.name=compute_score`,
  options via `reward.custom_reward_function.reward_kwargs.<key>=<value>`, e.g.
  `reward.custom_reward_function.reward_kwargs.mode=fuzzy` (no `+`: our recipes define reward_kwargs,
  and Hydra refuses `+` on a key that exists).
- EasyR1: `worker.reward.reward_function=reward_fns/imageedit_r1.py:compute_score_batch`,
  options via `worker.reward.reward_function_kwargs`.

Options (kwargs): `mode` = exact (default, the paper's reward) | fuzzy | semantic, and `weights`, a
mapping from component (format, action, subject, goal) to weight (missing ones are 1.0).

verl loads this file by path (as an unregistered module) inside Ray workers, where the repository
root may not be importable: so it only adds the root to sys.path and delegates to reward_fns.scoring.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

try:
    import reward_fns.scoring  # noqa: F401
except ImportError:  # loaded by file path from a process whose sys.path lacks the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reward_fns.components import SCORE_KEY  # noqa: E402
from reward_fns.scoring import as_text, options_from_kwargs, score_exact, score_responses  # noqa: E402

#: EasyR1 reads this to call `compute_score_batch` once per batch.
REWARD_TYPE = "batch"
#: EasyR1's name for the overall reward.
EASYR1_OVERALL_KEY = "overall"


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: str | Mapping[str, Any],
    extra_info: Any = None,
    **kwargs: Any,
) -> dict[str, float]:
    """verl entry: reward dict with exactly the keys score, format, action, subject, goal."""
    options = options_from_kwargs(kwargs)
    if options.mode == "exact":
        return score_exact(as_text(solution_str), ground_truth, options)
    return score_responses([solution_str], [ground_truth], options)[0]


def compute_score_batch(reward_inputs: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, float]]:
    """EasyR1 batch entry: one dict per input with `overall` (verl's `score`) and the four
    components, the keys EasyR1 logs as reward metrics."""
    options = options_from_kwargs(kwargs)
    results = score_responses(
        [item.get("response") for item in reward_inputs],
        [item["ground_truth"] for item in reward_inputs],
        options,
    )
    return [{EASYR1_OVERALL_KEY: r.pop(SCORE_KEY), **r} for r in results]
