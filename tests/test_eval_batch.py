"""Batch judging of a real pipeline run folder: cache, resume after an interruption, failures,
bounded concurrency; and reference metrics over the same run."""

from __future__ import annotations

import json
import threading

import pytest

from eval.batch import JudgeCache, image_hash, judge_run, summarize
from eval.judge import RubricJudge
from eval.reference import score_run_against_references, summarize_reference_rows
from eval.scores import read_scores
from eval.verifier import PrincipleVerifier
from inference.chat import ChatBackend

GOOD = '{"fulfillment": 4, "quality": 3, "preservation": 2, "reasoning": "ok"}'
N_ITEMS = 6


class CountingBackend(ChatBackend):
    """Answers every conversation with `answer`, counting conversations and peak concurrent calls."""

    model_id = "counting-judge"

    def __init__(self, answer=GOOD):
        self.answer = answer
        self.asked = 0
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    def generate(self, conversations, sampling):
        with self.lock:
            self.asked += len(conversations)
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            answer = self.answer(conversations[0]) if callable(self.answer) else self.answer
            return [[answer] * sampling.n for _ in conversations]
        finally:
            with self.lock:
                self.active -= 1


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run folder: synthetic records through the pipeline with oracle agents and the tool
    editor (mode multi: exact targets), plus mode original (the tool editor cannot execute free
    text, so those items fail and have no image)."""
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer
    from inference.records import read_records
    from inference.synthetic_items import write_synthetic_eval_set

    root = tmp_path_factory.mktemp("eval_run")
    records = write_synthetic_eval_set(root / "data", N_ITEMS, seed=1)
    pipeline = EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer(), batch_size=4)
    for mode in ("multi", "original"):
        pipeline.run(read_records(records), root / "runs", mode, progress=False)
    return root


def test_judges_a_run_folder_into_a_valid_score_file(run, tmp_path):
    backend = CountingBackend()
    rows = judge_run(
        run / "runs" / "multi",
        RubricJudge(backend),
        tmp_path / "scores.jsonl",
        benchmark="synthetic",
        evaluator="counting",
        method="imageedit_r1",
        cache_dir=tmp_path / "cache",
        progress=False,
    )
    assert len(rows) == N_ITEMS and backend.asked == N_ITEMS
    assert read_scores(tmp_path / "scores.jsonl") == rows
    row = rows[0]
    assert row["method"] == "imageedit_r1" and row["editor"] == "tool" and row["evaluator"] == "counting"
    assert row["total"] == 9 and row["error"] is None and row["reasoning"] == "ok"
    assert summarize(rows) == {"items": N_ITEMS, "judged": N_ITEMS, "failed": 0, "mean_total": 9.0}


def test_interrupted_batch_resumes_without_reasking_cached_items(run, tmp_path):
    out, cache = tmp_path / "scores.jsonl", tmp_path / "cache"
    backend = CountingBackend()
    done_batches = []

    def interrupt_after_first_batch(n):
        done_batches.append(n)
        raise Interrupted

    kwargs = dict(benchmark="synthetic", cache_dir=cache, batch_size=2, concurrency=1, progress=False)
    with pytest.raises(Interrupted):
        judge_run(
            run / "runs" / "multi",
            RubricJudge(backend),
            out,
            on_batch_done=interrupt_after_first_batch,
            **kwargs,
        )
    assert not out.exists() and len(JudgeCache(cache)) == 2
    asked_before = backend.asked
    rows = judge_run(run / "runs" / "multi", RubricJudge(backend), out, **kwargs)
    assert backend.asked - asked_before == N_ITEMS - 2  # only the uncached items
    assert [r["error"] for r in rows] == [None] * N_ITEMS
    rerun = judge_run(run / "runs" / "multi", RubricJudge(backend), out, **kwargs)
    assert backend.asked - asked_before == N_ITEMS - 2 and rerun == rows  # a full rerun asks nothing


def test_cache_key_covers_model_prompt_and_sampling(run, tmp_path):
    kwargs = dict(benchmark="synthetic", cache_dir=tmp_path / "cache", progress=False)
    first = CountingBackend()
    judge_run(run / "runs" / "multi", RubricJudge(first), tmp_path / "a.jsonl", **kwargs)
    other_model = CountingBackend()
    other_model.model_id = "another-judge"
    judge_run(run / "runs" / "multi", RubricJudge(other_model), tmp_path / "b.jsonl", **kwargs)
    assert other_model.asked == N_ITEMS
    verifier = CountingBackend('{"verdicts": [' + ",".join(['{"verdict": "yes"}'] * 8) + "]}")
    rows = judge_run(run / "runs" / "multi", PrincipleVerifier(verifier), tmp_path / "c.jsonl", **kwargs)
    assert verifier.asked == N_ITEMS and all(r["total"] == 10 for r in rows)
    assert all(v["verdict"] == "yes" for v in rows[0]["verdicts"])


def test_failures_are_recorded_not_cached_and_asked_again(run, tmp_path):
    kwargs = dict(benchmark="synthetic", cache_dir=tmp_path / "cache", progress=False)
    bad = CountingBackend("I refuse")
    rows = judge_run(run / "runs" / "multi", RubricJudge(bad, retries=1), tmp_path / "s.jsonl", **kwargs)
    assert bad.asked == 2 * N_ITEMS
    assert all(r["error"].startswith("unreadable answer") and r["total"] is None for r in rows)
    assert len(JudgeCache(tmp_path / "cache")) == 0
    good = CountingBackend()
    judge_run(run / "runs" / "multi", RubricJudge(good), tmp_path / "s.jsonl", **kwargs)
    assert good.asked == N_ITEMS


def test_items_without_an_edited_image_are_failures_not_asked(run, tmp_path):
    backend = CountingBackend()
    rows = judge_run(
        run / "runs" / "original",
        RubricJudge(backend),
        tmp_path / "s.jsonl",
        benchmark="synthetic",
        progress=False,
    )
    no_image = [r for r in rows if r["error"] and r["error"].startswith("no edited image")]
    assert backend.asked == N_ITEMS - len(no_image)
    assert all(r["fulfillment"] is None and r["method"] == "original" for r in no_image)


def test_concurrency_is_bounded(run, tmp_path):
    backend = CountingBackend()
    judge_run(
        run / "runs" / "multi",
        RubricJudge(backend),
        tmp_path / "s.jsonl",
        benchmark="synthetic",
        batch_size=1,
        concurrency=2,
        progress=False,
    )
    assert backend.asked == N_ITEMS and 1 <= backend.peak <= 2


def test_image_hash_ignores_png_metadata(run):
    from PIL import Image

    trace = json.loads(next((run / "runs" / "multi").glob("*.json")).read_text())
    with Image.open(trace["output_image"]) as im:
        a = image_hash(im)
        plain = im.convert("RGB")
    plain.info.clear()
    assert image_hash(plain) == a


def test_reference_metrics_of_the_oracle_run_are_exact(run, tmp_path):
    rows = score_run_against_references(run / "runs" / "multi", run / "data", tmp_path / "ref.jsonl")
    assert len(rows) == N_ITEMS and all(r["exact"] is True and r["error"] is None for r in rows)
    assert all(r["psnr"] == 100.0 and r["ssim"] == pytest.approx(1.0) for r in rows)
    (summary,) = summarize_reference_rows(rows)
    assert summary["exact"] == 1.0 and summary["benchmark"] == "synthetic" and summary["errors"] == 0
    original = score_run_against_references(run / "runs" / "original", run / "data", tmp_path / "ref0.jsonl")
    failed = [r for r in original if r["error"]]
    assert all(r["psnr"] is None and r["exact"] is False for r in failed)
    assert all(r["decomposition"] is None for r in original)  # mode original has no decomposition


def test_an_unreadable_edited_image_is_a_failure_row_not_a_crash(run, tmp_path):
    import shutil
    from pathlib import Path

    folder = shutil.copytree(run / "runs" / "multi", tmp_path / "multi")
    traces = sorted(folder.glob("*.json"))
    trace = json.loads(traces[0].read_text())
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(trace["output_image"]).read_bytes()[:40])  # truncated
    trace["output_image"] = str(broken)
    traces[0].write_text(json.dumps(trace))
    backend = CountingBackend()
    rows = judge_run(
        folder, RubricJudge(backend), tmp_path / "s.jsonl", benchmark="synthetic", progress=False
    )
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 1 and "cannot load images: BadImage: corrupt_image" in failed[0]["error"]
    assert backend.asked == N_ITEMS - 1
    # the reference metrics too: that row carries the error, every other row its metrics
    refs = score_run_against_references(folder, run / "data", tmp_path / "ref.jsonl")
    bad = [r for r in refs if r["error"]]
    assert len(bad) == 1 and "unreadable image" in bad[0]["error"] and bad[0]["psnr"] is None
    assert sum(r["exact"] is True for r in refs) == N_ITEMS - 1
