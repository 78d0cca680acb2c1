"""`make demo` in its reduced configuration, end to end: every stage runs and the report is written."""

from __future__ import annotations

import json


def test_quick_demo_end_to_end_and_rerun_reuses(tmp_path):
    from recipes.demo import main

    out = tmp_path / "demo"
    report = main(["--quick", "--out", str(out)])
    text = report.read_text()
    assert "not, and do not estimate, the paper's scores" in text
    assert "Held-out decomposition reward" in text and "Pipeline on held-out items" in text
    assert "## Findings" in text and "exact-edit rate" in text
    for row in ("oracle / single", "cold start / multi", "GRPO / single", "GRPO / original"):
        assert row in text
    assert (out / "reward_curves.png").stat().st_size > 1000
    assert (out / "before_after.png").stat().st_size > 1000
    # both trainings ran on verl and were exported by verl's model_merger
    assert (out / "models" / "sft" / "config.json").is_file() and (
        out / "models" / "grpo" / "config.json"
    ).is_file()
    steps = [json.loads(line)["step"] for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s > 0] == [1, 2] and list((out / "run").glob("wandb/offline-run-*"))
    assert sorted(p.stem for p in (out / "run" / "validation").glob("*.jsonl")) == ["0", "2"]
    traces = list((out / "pipeline" / "grpo" / "single").glob("*.json"))
    assert len(traces) == 4
    # oracle decomposition + exact tool editor: some items are edited exactly
    oracle = [json.loads(p.read_text()) for p in (out / "pipeline" / "oracle" / "single").glob("*.json")]
    assert any(t["output_image"] for t in oracle)

    mtimes = {p: p.stat().st_mtime for p in traces}
    main(["--quick", "--out", str(out)])  # a rerun reuses every finished stage and item
    assert all(p.stat().st_mtime == m for p, m in mtimes.items())
