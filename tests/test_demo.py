"""`make demo` in its reduced configuration, end to end: every stage runs and the report is written."""

from __future__ import annotations

import json

from wandb_files import read_wandb_tables


def test_quick_demo_end_to_end_and_rerun_reuses(tmp_path):
    from recipes.demo import main

    out = tmp_path / "demo"
    report = main(["--quick", "--out", str(out), "--sft-lr", "3e-3"])
    text = report.read_text()
    # the cold start's lr, as given, is what it ran with and what the report says it saw
    assert json.loads((out / "run" / "sft.json").read_text())["lr"] == 3e-3 and "lr 0.003" in text
    assert "picked from 2e-4 and 6e-4 on these held-out items" in text  # how GRPO's lr was chosen
    assert "not, and do not estimate, the paper's scores" in text
    assert "Table 1 in miniature" in text and "What each stage saw" in text and "Learning health" in text
    for row in (
        "oracle / single",
        "cold start / single",
        "GRPO / single",
        "SFT control / single",
        "GRPO / original",
    ):
        assert row in text
    for row in ("original", "w/o RL (cold start)", "ImageEdit-R1 (GRPO)", "SFT control (equal compute)"):
        assert f"| {row} |" in text
    summary = json.loads((out / "report.json").read_text())
    for checkpoint in ("cold_start", "grpo", "sft_control", "grpo_minus_cold_start"):
        estimate = summary["heldout_reward"][checkpoint]
        assert estimate["ci"][0] <= estimate["mean"] <= estimate["ci"][1]
    assert set(summary["exact_edit"]) >= {
        "original",
        "cold_start",
        "grpo",
        "sft_control",
        "grpo_minus_cold_start",
    }
    assert 0.0 <= summary["constant_baseline"]["reward"]["mean"] <= 1.0 and summary["minutes"] > 0
    assert (out / "reward_curves.png").stat().st_size > 1000
    assert (out / "learning_health.png").stat().st_size > 1000
    assert (out / "before_after.png").stat().st_size > 1000
    # both trainings ran on verl and were exported by verl's model_merger
    for model in ("sft", "grpo", "sft_control"):
        assert (out / "models" / model / "config.json").is_file()
    rows = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["step"] > 0] == [1, 2] and list(
        (out / "run").glob("wandb/offline-run-*")
    )
    # the learning-health signals are logged every step
    for key in (
        "train/grpo/zero_variance_group_fraction",
        "actor/entropy_loss",
        "actor/kl_loss",
        "actor/ppo_kl",
    ):
        assert all(key in r["data"] for r in rows if r["step"] > 0), key
    assert sorted(p.stem for p in (out / "run" / "validation").glob("*.jsonl")) == ["0", "2"]
    # W&B's table of validation samples: the image beside request, answer and reward components, the
    # same items at each validation (recipes/validation_samples.py)
    table = read_wandb_tables(next((out / "run").glob("wandb/offline-run-*")), "val/samples")[-1]
    columns = table["columns"]
    assert columns == [
        "step",
        "item",
        "image",
        "request",
        "answer",
        "reward",
        "format",
        "action",
        "subject",
        "goal",
    ]
    rows = [dict(zip(columns, row, strict=True)) for row in table["data"]]
    assert sorted({r["step"] for r in rows}) == [0, 2] and len(rows) == 8  # 4 held-out items, 2 validations
    assert [r["item"] for r in rows if r["step"] == 0] == [r["item"] for r in rows if r["step"] == 2]
    for r in rows:
        assert r["image"]["_type"] == "image-file" and r["request"] and 0 <= r["reward"] <= 1
        assert table["files"][r["image"]["path"]].read_bytes().startswith(b"\x89PNG")
    traces = list((out / "pipeline" / "grpo" / "single").glob("*.json"))
    assert len(traces) == 4
    # oracle decomposition + exact tool editor: some items are edited exactly
    oracle = [json.loads(p.read_text()) for p in (out / "pipeline" / "oracle" / "single").glob("*.json")]
    assert any(t["output_image"] for t in oracle)

    mtimes = {p: p.stat().st_mtime for p in traces}
    main(["--quick", "--out", str(out), "--sft-lr", "3e-3"])  # a rerun reuses every finished stage and item
    assert all(p.stat().st_mtime == m for p, m in mtimes.items())
