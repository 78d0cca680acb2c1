"""The demo's report arithmetic (recipes/demo_report.py) and the learning-health curves, on made-up
per-item rows and metrics whose answers are known."""

from __future__ import annotations

import json

import pytest

from recipes import demo_report


def _rows(rewards: list[float | None], exact: list[bool]) -> list[dict]:
    return [
        {"id": f"i{n}", "decomposition": None if r is None else {"score": r}, "exact": e}
        for n, (r, e) in enumerate(zip(rewards, exact, strict=True))
    ]


def test_per_item_counts_a_failed_decomposition_as_reward_zero_and_not_exact():
    items = demo_report.per_item(_rows([0.5, None], [True, False]))
    assert items == {"i0": {"reward": 0.5, "exact": 1.0}, "i1": {"reward": 0.0, "exact": 0.0}}


def test_table1_results_pairs_items_and_orders_the_verdicts():
    n = 40
    before = demo_report.per_item(_rows([0.4] * n, [i < 4 for i in range(n)]))
    after = demo_report.per_item(_rows([0.6] * n, [i < 12 for i in range(n)]))
    original = demo_report.per_item(_rows([0.0] * n, [i < 1 for i in range(n)]))
    results = demo_report.table1_results({"original": original, "cold_start": before, "grpo": after})
    reward = results["heldout_reward"]["grpo_minus_cold_start"]
    assert reward["mean"] == pytest.approx(0.2) and reward["ci"] == pytest.approx([0.2, 0.2])
    exact = results["exact_edit"]["grpo_minus_cold_start"]
    assert exact["mean"] == pytest.approx(0.2) and exact["ci"][0] > 0 and exact["n"] == n
    json.dumps(results)  # report.json is plain JSON
    text = "\n".join(demo_report.verdicts(results))
    assert "GRPO raised the held-out reward" in text and "GRPO raised the exact-edit rate" in text
    assert "original < w/o RL < GRPO holds" in text
    table = demo_report.table1(results).to_markdown()
    assert "| original |" in table and "| ImageEdit-R1 (GRPO) |" in table


def test_verdicts_say_when_nothing_changed_and_when_the_control_wins():
    flat = demo_report.per_item(_rows([0.5, 0.4, 0.6, 0.5], [True, False, True, False]))
    better = demo_report.per_item(_rows([0.9, 0.8, 0.9, 0.9], [True, True, True, True]))
    results = demo_report.table1_results({"cold_start": flat, "grpo": flat, "sft_control": better})
    text = "\n".join(demo_report.verdicts(results))
    assert "did not measurably change the held-out reward" in text
    assert "(better: the SFT control)" in text


def test_constant_baseline_gives_the_most_frequent_training_answer_to_every_item():
    from inference.protocol import Decomposition, render_decomposition

    common = render_decomposition(Decomposition(("brighten",), ("image",), ("brighter",), think="1 edit"))
    rare = render_decomposition(Decomposition(("remove",), ("red square",), ("removed",), think="1 edit"))
    held = [
        {"actions": ["brighten"], "subjects": ["image"], "goals": ["brighter"]},
        {"actions": ["remove"], "subjects": ["red square"], "goals": ["removed"]},
    ]
    baseline = demo_report.constant_baseline([common, common, rare], held)
    assert baseline["answer"] == common and baseline["share_of_training_answers"] == pytest.approx(2 / 3)
    assert baseline["reward"].mean == pytest.approx((1.0 + 0.25) / 2)  # format only on the second item


def test_answer_diversity_counts_distinct_parsed_answers():
    traces = [{"decomposition": {"parsed": {"actions": [a]}}} for a in ("x", "x", "y")] + [
        {"decomposition": None}
    ]
    assert demo_report.answer_diversity(traces) == {"items": 4, "distinct": 2, "most_common_share": 0.5}


def _metrics(steps: int = 20) -> list[dict]:
    return [
        {
            "step": s,
            "train/grpo/zero_variance_group_fraction": 0.2 + 0.02 * s,
            "actor/entropy_loss": 1.0 - 0.01 * s,
            "actor/kl_loss": 0.001 * s,
            "actor/ppo_kl": 1e-5,
            "response_length/mean": 30.0,
            "train/reward/score": 0.5 + 0.01 * s,
            "train/reward/format": 1.0,
        }
        for s in range(1, steps + 1)
    ]


def test_health_summary_and_findings_name_the_signals():
    health = demo_report.health_summary(_metrics())
    assert health["zero-variance groups (fraction)"]["first"] == pytest.approx(0.2 + 0.02 * 5.5)
    assert health["policy entropy"]["metric"] == "actor/entropy_loss"
    assert health["rollout vs actor log-prob"]["metric"] == "actor/ppo_kl"
    text = "\n".join(demo_report.health_findings(health))
    for phrase in (
        "no reward variance",
        "entropy",
        "KL to the reference",
        "Rollout and actor agree",
        "score",
    ):
        assert phrase in text


def test_health_curves_png_and_cli(tmp_path):
    from eval.cli import main as eval_main
    from eval.curves import plot_health_curves

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": m.pop("step"), "data": m}) + "\n" for m in _metrics()))
    assert plot_health_curves(metrics, tmp_path / "h.png").stat().st_size > 1000
    assert eval_main(["curves", "--health", "--metrics", str(metrics), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    (tmp_path / "empty.jsonl").write_text('{"step": 1, "data": {"x": 1}}\n')
    with pytest.raises(ValueError, match="no learning-health metrics"):
        plot_health_curves(tmp_path / "empty.jsonl", tmp_path / "e.png")


def test_verl_validation_dumps_are_paired_by_item_not_by_line(tmp_path):
    """verl writes each validation dump in the order its agent loop finished: the same items, shuffled."""
    from recipes.demo import held_out

    items = [(f"request {i}", f'{{"actions": ["a{i}"]}}') for i in range(30)] + [
        ("request 0", '{"actions": ["a0"]}')
    ]
    # the repeated prompt and ground truth (two images, same text) scores alike: which pairs with which is moot
    first = [{"input": q, "gts": g, "score": 0.2 + 0.01 * (n % 30)} for n, (q, g) in enumerate(items)]
    last = [{**row, "score": row["score"] + 0.1} for row in first][::-1]  # every item +0.1, order reversed
    (tmp_path / "0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first))
    (tmp_path / "20.jsonl").write_text("".join(json.dumps(r) + "\n" for r in last))
    held = held_out(tmp_path)
    assert held["steps"] == (0, 20) and held["items"] == 31
    delta = held["score"]["delta"]
    assert (
        delta.mean == pytest.approx(0.1)
        and delta.low == pytest.approx(0.1)
        and delta.high == pytest.approx(0.1)
    )


def test_exact_edits_split_by_what_the_subjects_need_and_the_named_subjects_copied():
    truth = {
        "a": ("Blur the background and brighten the photo.", ["background", "image"]),
        "b": ("Remove the blue triangle.", ["blue triangle"]),
        "c": ("Make the blue thing larger.", ["blue circle"]),
    }
    assert [demo_report.subject_need(*truth[k]) for k in "abc"] == list(demo_report.SUBJECT_NEEDS)
    items = {"cold_start": {"a": {"exact": 1.0}, "b": {"exact": 0.0}, "c": {"exact": 0.0}}}
    traces = {
        "cold_start": [
            {"id": "a", "decomposition": {"parsed": {"subjects": ["background", "image"]}}},
            {"id": "b", "decomposition": {"parsed": {"subjects": ["red square"]}}},  # not copied
            {"id": "c", "decomposition": None},  # no answer
        ]
    }
    out = demo_report.exact_by_subject_need(truth, items, traces)
    assert out["exact"]["scene-wide only"] == {"items": 1, "cold_start": 1}
    assert out["exact"]["named in the request"] == {"items": 1, "cold_start": 0}
    assert out["named_subjects_copied"] == {"cold_start": {"named": 1, "copied": 0}}
    lines = demo_report.subject_need_findings(out)
    assert "cold start 1/1 scene-wide and 0/2 with objects" in lines[0]
    assert "copy: cold start 0 (0%)" in lines[1]
    assert "| object subjects named" in demo_report.subject_need_table(out).to_markdown()
