"""Training reward curves (the paper's Figure 3) from a run's metrics log.

Two log shapes are read, one JSON object per line:

* ours, written by both trainers: ``{"step": 3, "train/reward/score": 0.41, "train/reward/format": ...}``
* verl's ``file`` logger (``trainer.logger=[file]``): ``{"step": 3, "data": {...metrics...}}``, with
  ``"attempt": "..."`` when written by the appending logger the launcher installs (recipes/metrics_log.py):
  every attempt of a resumed run appends to the same file.

Both become flat dicts with an int ``step``. Metric names come from `reward_fns.components`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reward_fns.components import REWARD_COMPONENTS, SCORE_KEY, train_metric

#: verl's own per-step mean sequence score, used for the overall curve when ours is absent.
VERL_SCORE_METRIC = "critic/score/mean"
#: The record key naming the attempt (one trainer start) that wrote it (recipes/metrics_log.py).
ATTEMPT_KEY = "attempt"


def _flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """One log record as a flat dict (verl's file logger nests the metrics under "data")."""
    flat = {k: v for k, v in record.items() if k not in ("data", ATTEMPT_KEY)}
    data = record.get("data")
    if isinstance(data, Mapping):
        flat.update(data)
    return flat


def load_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Per-step metric dicts sorted by step, the whole history of a run across its restarts.

    Records of one step from the same attempt merge (verl logs a step's validation in a record of its
    own), later values winning. A step an earlier attempt logged too (a crash after the last
    checkpoint, then a resume) is the later attempt's alone: each step appears once, as it was last run.
    Records without an attempt (verl's own logger, ours) count as one attempt.

    `path` is a ``metrics.jsonl`` file or a run folder holding one. A torn last line (a trainer
    killed mid-write) is skipped with a warning; any other bad line is a ValueError naming it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"metrics log not found: {path}")
    lines = path.read_text(encoding="utf-8").split("\n")
    by_step: dict[int, dict[str, Any]] = {}
    attempt_of: dict[int, Any] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no trailing newline: the writer was interrupted
                warnings.warn(f"{path}:{number}: skipping torn last line ({exc.msg})", stacklevel=2)
                continue
            raise ValueError(f"{path}:{number}: not a JSON object ({exc.msg}): {line[:200]!r}") from None
        if not isinstance(record, Mapping):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        flat = _flatten(record)
        step = flat.get("step")
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"{path}:{number}: missing or non-integer 'step': {line[:200]!r}")
        flat["step"] = step
        attempt = record.get(ATTEMPT_KEY)
        earlier = by_step.get(step, {}) if attempt_of.get(step, attempt) == attempt else {}
        by_step[step], attempt_of[step] = {**earlier, **flat}, attempt
    return [by_step[s] for s in sorted(by_step)]


def _series(metrics: Sequence[Mapping[str, Any]], name: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for m in metrics:
        v = m.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            steps.append(int(m["step"]))
            values.append(float(v))
    return steps, values


def reward_series(metrics: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Curves to draw, by label: the overall score then each reward component that was logged."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    score = _series(metrics, train_metric(SCORE_KEY))
    if not score[0]:
        score = _series(metrics, VERL_SCORE_METRIC)
    if score[0]:
        curves[SCORE_KEY] = score
    for component in REWARD_COMPONENTS:
        series = _series(metrics, train_metric(component))
        if series[0]:
            curves[component] = series
    return curves


def _moving_average(values: list[float], window: int) -> list[float]:
    if window <= 1:
        return values
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def save_figure_atomic(fig: Any, out_png: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG atomically (`inference.fileio.atomic_path`)."""
    from inference.fileio import atomic_path

    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    return out


def _pyplot_and_metrics(metrics: Sequence[Mapping[str, Any]] | str | os.PathLike):
    """matplotlib's pyplot on the headless Agg backend, and `metrics` loaded when given as a path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(metrics, (str, os.PathLike)):
        metrics = load_metrics(metrics)
    return plt, metrics


def _plot_rewards(
    ax: Any, curves: Mapping[str, tuple[list[int], list[float]]], smooth: int, **line: Any
) -> None:
    """One line per reward component on `ax`, the overall score dashed."""
    for label, (steps, values) in curves.items():
        style = "--" if label == SCORE_KEY else "-"
        ax.plot(steps, _moving_average(values, smooth), style, label=label, **line)


def plot_reward_curves(
    metrics: Sequence[Mapping[str, Any]] | str | os.PathLike,
    out_png: str | os.PathLike,
    title: str | None = None,
    smooth: int = 1,
) -> Path:
    """One line per reward component (and the overall score, dashed) against the training step.

    `metrics` is what `load_metrics` returns (or a path it accepts); `smooth` is a trailing
    moving-average window. Raises ValueError when no reward metric is present.
    """
    plt, metrics = _pyplot_and_metrics(metrics)
    curves = reward_series(metrics)
    if not curves:
        wanted = [train_metric(c) for c in (SCORE_KEY, *REWARD_COMPONENTS)]
        raise ValueError(f"no reward metrics to plot: expected some of {wanted} in the log")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    try:
        _plot_rewards(ax, curves, smooth, linewidth=1.6)
        ax.set_xlabel("training step")
        ax.set_ylabel("mean reward")
        ax.set_title(title or "Training rewards")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        return save_figure_atomic(fig, out_png)
    finally:
        plt.close(fig)


#: The learning-health signals of a GRPO run, by panel title: the metric names verl (and our replay
#: buffer) log, first one present wins. What a user watches on a 7B run as well as on the CPU demo.
HEALTH_SIGNALS: dict[str, tuple[str, ...]] = {
    # groups whose n rollouts all scored the same: zero advantage, no learning signal
    "zero-variance groups (fraction)": ("train/grpo/zero_variance_group_fraction",),
    # policy entropy over response tokens (actor/entropy: verl's old-log-prob pass; actor/entropy_loss:
    # the update's, when bypass mode skips that pass)
    "policy entropy": ("actor/entropy", "actor/entropy_loss"),
    "KL to the reference": ("actor/kl_loss",),
    # rollout vs actor: verl's check of the rollout's log-probs against the actor's (non-bypass mode),
    # else the PPO KL of the one update per batch, whose old policy is the rollout's in bypass mode
    "rollout vs actor log-prob": ("training/rollout_probs_diff_mean", "actor/ppo_kl"),
    "response length (tokens)": ("response_length/mean",),
}


def health_series(metrics: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, list[int], list[float]]]:
    """{panel title: (metric name, steps, values)} for each HEALTH_SIGNALS panel that was logged."""
    out = {}
    for title, names in HEALTH_SIGNALS.items():
        for name in names:
            steps, values = _series(metrics, name)
            if steps:
                out[title] = (name, steps, values)
                break
    return out


def plot_health_curves(
    metrics: Sequence[Mapping[str, Any]] | str | os.PathLike,
    out_png: str | os.PathLike,
    title: str | None = None,
    smooth: int = 1,
) -> Path:
    """One panel per learning-health signal (HEALTH_SIGNALS) plus the reward components, against the
    training step. Raises ValueError when none was logged."""
    plt, metrics = _pyplot_and_metrics(metrics)
    panels = health_series(metrics)
    rewards = reward_series(metrics)
    if not panels and not rewards:
        wanted = [n for names in HEALTH_SIGNALS.values() for n in names]
        raise ValueError(f"no learning-health metrics to plot: expected some of {wanted} in the log")
    count = len(panels) + bool(rewards)
    cols = 3
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    try:
        flat = [ax for row in axes for ax in row]
        for ax, (panel, (name, steps, values)) in zip(flat, panels.items(), strict=False):
            ax.plot(steps, _moving_average(values, smooth), linewidth=1.4)
            ax.set_title(f"{panel}\n{name}", fontsize=8)
        if rewards:
            ax = flat[len(panels)]
            _plot_rewards(ax, rewards, smooth)
            ax.set_title("reward components\ntrain/reward/*", fontsize=8)
            ax.legend(fontsize=6, loc="lower right")
        for ax in flat[:count]:
            ax.set_xlabel("training step", fontsize=7)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in flat[count:]:
            ax.axis("off")
        fig.suptitle(title or "Learning health", fontsize=10)
        fig.tight_layout()
        return save_figure_atomic(fig, out_png)
    finally:
        plt.close(fig)
