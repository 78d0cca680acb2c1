"""Bootstrap confidence intervals for per-item scores (held-out means and paired differences).

A demo on a few hundred held-out items moves by a few hundredths between checkpoints; an interval
says whether that is more than resampling noise. Percentile bootstrap, seeded, numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with its two-sided percentile interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _check(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: need a non-empty list of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: {int((~np.isfinite(array)).sum())} values are not finite")
    return array


def bootstrap_mean(
    values: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """The mean of `values` and its percentile bootstrap interval at `level`."""
    x = _check(values, "bootstrap_mean")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def bootstrap_difference(
    after: Sequence[float], before: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of `after - before` over the same items (paired) with its bootstrap interval."""
    a, b = _check(after, "bootstrap_difference after"), _check(before, "bootstrap_difference before")
    if a.shape != b.shape:
        raise ValueError(f"bootstrap_difference: paired lists differ in length ({a.size} vs {b.size})")
    return bootstrap_mean(a - b, level=level, resamples=resamples, seed=seed)


def bootstrap_unpaired_difference(
    after: Sequence[float], before: Sequence[float], level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of `after` minus mean of `before` (independent samples) with its bootstrap interval."""
    a, b = (
        _check(after, "bootstrap_unpaired_difference after"),
        _check(before, "bootstrap_unpaired_difference before"),
    )
    rng = np.random.default_rng(seed)
    diffs = a[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1) - b[
        rng.integers(0, b.size, size=(resamples, b.size))
    ].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return Estimate(float(a.mean() - b.mean()), float(low), float(high), int(a.size + b.size))
