"""A measured learning run on verl's own trainers on CPU (`make test-slow`): the demo's cold start and
GRPO stages at their default sizes. GRPO must raise the training reward (the mean of the last 25 steps
above the first 25, from verl's own metrics log) and the held-out greedy reward of verl's validation,
with the paired 95% interval of the difference above 0."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_grpo_on_verl_raises_the_training_reward(tmp_path):
    from recipes import demo, tiny_assets
    from recipes.launch import compose

    out = tmp_path / "demo"
    tiny_assets.ensure(compose("imageedit_r1_tiny", demo.asset_overrides(out, quick=False)), progress=False)
    sft = demo.train_sft(out, quick=False)
    grpo = demo.train_grpo(out, sft, quick=False, user=[])
    rows = [json.loads(line) for line in grpo["metrics"].read_text().splitlines()]
    score = [
        r["data"]["train/reward/score"]
        for r in sorted(rows, key=lambda r: r["step"])
        if "train/reward/score" in r["data"]
    ]
    assert len(score) == demo.GRPO_STEPS
    first, last = sum(score[:25]) / 25, sum(score[-25:]) / 25
    assert last > first, f"training reward did not rise: first 25 steps {first:.3f}, last 25 {last:.3f}"
    held = demo.held_out(grpo["validation"])
    delta = held["score"]["delta"]
    assert delta.low > 0, (
        f"held-out reward did not rise: {held['score']['before']} -> {held['score']['after']}, {delta}"
    )
