"""eval.curves: both log shapes, resume/torn-line handling, and a real Agg plot."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from eval.curves import load_metrics, plot_reward_curves, reward_series
from reward_fns.components import REWARD_COMPONENTS, train_metric


def _write(path, rows, trailing_newline=True):
    text = "\n".join(json.dumps(r) for r in rows)
    path.write_text(text + ("\n" if trailing_newline else ""))
    return path


def _ours(step):
    row = {"step": step, train_metric("score"): step / 10, "loss": 1.0}
    row.update({train_metric(c): step / 20 for c in REWARD_COMPONENTS})
    return row


def test_load_ours_sorted_and_resumed_step_merges(tmp_path):
    log = _write(tmp_path / "metrics.jsonl", [_ours(2), _ours(1), {"step": 2, train_metric("goal"): 0.9}])
    metrics = load_metrics(tmp_path)  # a run folder works too
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[1][train_metric("goal")] == 0.9
    assert metrics[1][train_metric("format")] == pytest.approx(0.1)
    assert load_metrics(log) == metrics


def test_load_verl_file_logger_shape(tmp_path):
    rows = [
        {"step": s, "data": {"critic/score/mean": s * 0.1, train_metric("action"): 0.5}} for s in (1, 2, 3)
    ]
    metrics = load_metrics(_write(tmp_path / "exp.jsonl", rows))
    assert metrics[2] == {"step": 3, "critic/score/mean": pytest.approx(0.3), train_metric("action"): 0.5}
    curves = reward_series(metrics)
    assert list(curves) == ["score", "action"]  # verl's score stands in for ours
    assert curves["score"][0] == [1, 2, 3]


def test_a_step_an_earlier_attempt_logged_is_the_later_attempts_alone(tmp_path):
    """Two attempts of one run in one file (recipes/metrics_log.py): the first logged steps 1-3 and
    crashed after its checkpoint at 2; the resumed one logs 3 (without the first's `extra`) and 4,
    then step 4's validation in a record of its own, which merges into step 4."""

    def rec(step, attempt, **data):
        return {"step": step, "data": data, "attempt": attempt}

    rows = [
        rec(1, "a", score=0.1),
        rec(2, "a", score=0.2),
        rec(3, "a", score=0.3, extra=9.0),
        rec(3, "b", score=0.35),
        rec(4, "b", score=0.4),
        rec(4, "b", val=0.5),
    ]
    metrics = load_metrics(_write(tmp_path / "metrics.jsonl", rows))
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[2] == {"step": 3, "score": 0.35}
    assert metrics[3] == {"step": 4, "score": 0.4, "val": 0.5}
    assert all("attempt" not in m for m in metrics)


def test_torn_last_line_is_skipped_but_bad_middle_line_raises(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps(_ours(1)) + "\n" + '{"step": 2, "train/rew')
    with pytest.warns(UserWarning, match="torn last line"):
        assert [m["step"] for m in load_metrics(log)] == [1]
    log.write_text('{"step": 1,\n' + json.dumps(_ours(2)) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:1"):
        load_metrics(log)
    log.write_text(json.dumps({"loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="step"):
        load_metrics(log)
    with pytest.raises(FileNotFoundError):
        load_metrics(tmp_path / "missing.jsonl")


def test_plot_reward_curves_writes_png(tmp_path):
    log = _write(tmp_path / "metrics.jsonl", [_ours(s) for s in range(1, 30)])
    out = plot_reward_curves(load_metrics(log), tmp_path / "plots" / "rewards.png", title="tiny", smooth=5)
    assert out == tmp_path / "plots" / "rewards.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 200
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    assert plot_reward_curves(log, tmp_path / "again.png").is_file()


def test_plot_without_reward_metrics_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="train/reward/score"):
        plot_reward_curves([{"step": 1, "loss": 0.3}], tmp_path / "x.png")
