"""The rubric judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib http.server),
through the shared `inference.chat_backends` OpenAI backend."""

from __future__ import annotations

import json
import threading

import pytest
from local_server import LocalServer, chat_completion, request_json
from PIL import Image

from eval.judge import JudgeItem, RubricJudge

GOOD = '{"fulfillment": 4, "quality": 3, "preservation": 2, "reasoning": "done"}'


class JudgeServer(LocalServer):
    """`POST /v1/chat/completions` answering from `script` (then GOOD); `requests` are the JSON bodies."""

    def __init__(self, script=()):
        self.script = list(script)
        self.lock = threading.Lock()
        super().__init__(self._respond)

    def _respond(self, request):
        if request["path"] != "/v1/chat/completions":
            return 404, {}, b""
        with self.lock:
            answer = self.script.pop(0) if self.script else GOOD
        return 200, {}, chat_completion(answer)

    @property
    def bodies(self):
        return [request_json(r) for r in self.requests]

    @property
    def url(self):
        return super().url + "/v1"


@pytest.fixture
def images():
    return Image.new("RGB", (24, 24), "blue"), Image.new("RGB", (24, 24), "red")


def _backend(url):
    from inference.chat_backends import make_backend

    return make_backend("openai", "gpt-4o", base_url=url, api_key_env=None, max_concurrency=2)


def test_http_judge_sends_both_images_in_order_and_reads_the_answer(images):
    with JudgeServer() as server:
        judgement = RubricJudge(_backend(server.url)).judge("make it red", *images)
    assert judgement.ok and judgement.scores.total == 9 and judgement.scores.reasoning == "done"
    (request,) = server.bodies
    assert request["model"] == "gpt-4o" and request["temperature"] == 0.0
    parts = request["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in parts[:2])
    assert parts[0]["image_url"]["url"] != parts[1]["image_url"]["url"]
    assert '"make it red"' in parts[2]["text"]


def test_http_judge_retries_an_unreadable_answer_then_records_failure(images):
    with JudgeServer(script=["I'd rather not say.", GOOD]) as server:
        judgement = RubricJudge(_backend(server.url), retries=1).judge("x", *images)
    assert judgement.ok and len(server.requests) == 2 and server.bodies[1]["temperature"] > 0
    with JudgeServer(script=["nope"] * 3) as server:
        results = RubricJudge(_backend(server.url), retries=2).judge_many([JudgeItem("x", *images)])
    assert not results[0].ok and results[0].score_fields()["total"] is None
    assert len(server.requests) == 3 and "after 3 attempts" in results[0].error


def test_batch_rerun_against_the_server_sends_no_request(tmp_path):
    """An interrupted-then-finished batch and a full rerun: the server counts what is asked."""
    from eval.batch import judge_run
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer
    from inference.records import read_records
    from inference.synthetic_items import write_synthetic_eval_set

    records = write_synthetic_eval_set(tmp_path / "data", 4, seed=2)
    pipeline = EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer())
    pipeline.run(read_records(records), tmp_path / "runs", "single", progress=False)
    kwargs = dict(benchmark="synthetic", evaluator="GPT-4o", cache_dir=tmp_path / "cache", progress=False)
    with JudgeServer() as server:
        rows = judge_run(
            tmp_path / "runs" / "single", RubricJudge(_backend(server.url)), tmp_path / "s.jsonl", **kwargs
        )
        assert len(server.requests) == 4 and all(r["total"] == 9 for r in rows)
        again = judge_run(
            tmp_path / "runs" / "single", RubricJudge(_backend(server.url)), tmp_path / "s.jsonl", **kwargs
        )
        assert len(server.requests) == 4 and again == rows


def test_cli_judge_against_the_server(tmp_path, capsys):
    """`python -m eval judge` end to end (in process) over HTTP, both scorers."""
    from eval.cli import main
    from eval.scores import read_scores
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer
    from inference.records import read_records
    from inference.synthetic_items import write_synthetic_eval_set

    records = write_synthetic_eval_set(tmp_path / "data", 3, seed=3)
    EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer()).run(
        read_records(records), tmp_path / "runs", "multi", progress=False
    )
    verdicts = '{"verdicts": [' + ",".join(['{"verdict": "yes"}'] * 8) + "]}"
    with JudgeServer(script=[GOOD] * 3 + [verdicts] * 3) as server:
        common = [
            "--run",
            str(tmp_path / "runs" / "multi"),
            "--benchmark",
            "synthetic",
            "--backend",
            "openai",
        ]
        common += ["--model", "gpt-4o", "--base-url", server.url, "--api-key-env", "", "--no-progress"]
        assert main(["judge", *common, "--out", str(tmp_path / "rubric.jsonl"), "--evaluator", "GPT-4o"]) == 0
        assert (
            main(["judge", *common, "--out", str(tmp_path / "verifier.jsonl"), "--scorer", "verifier"]) == 0
        )
    rubric, verifier = read_scores(tmp_path / "rubric.jsonl"), read_scores(tmp_path / "verifier.jsonl")
    assert [r["total"] for r in rubric] == [9.0] * 3 and {r["evaluator"] for r in rubric} == {"GPT-4o"}
    assert [r["total"] for r in verifier] == [10.0] * 3 and verifier[0]["evaluator"] == "gpt-4o"
    assert "verifier" not in server.bodies[0]["messages"][0]["content"][2]["text"].lower()
    assert "Principles" in server.bodies[3]["messages"][0]["content"][2]["text"]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert summary["judged"] == 3 and summary["failed"] == 0
