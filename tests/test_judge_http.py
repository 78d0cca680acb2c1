"""The rubric judge against a real OpenAI-compatible HTTP server on 127.0.0.1 (stdlib http.server),
through the shared `inference.llm` OpenAI backend."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from eval.judge import JudgeItem, RubricJudge

GOOD = '{"fulfillment": 4, "quality": 3, "preservation": 2, "reasoning": "done"}'


class JudgeServer:
    """`POST /v1/chat/completions` answering from `script` (then GOOD), recording every request."""

    def __init__(self, script=()):
        self.script = list(script)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append(body)
                    answer = owner.script.pop(0) if owner.script else GOOD
                if self.path != "/v1/chat/completions":
                    self.send_response(404)
                    self.end_headers()
                    return
                payload = json.dumps(
                    {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def images():
    return Image.new("RGB", (24, 24), "blue"), Image.new("RGB", (24, 24), "red")


def _backend(url):
    from inference.llm import make_backend

    return make_backend("openai", "gpt-4o", base_url=url, api_key_env=None, max_concurrency=2)


def test_http_judge_sends_both_images_in_order_and_reads_the_answer(images):
    with JudgeServer() as server:
        judgement = RubricJudge(_backend(server.url)).judge("make it red", *images)
    assert judgement.ok and judgement.scores.total == 9 and judgement.scores.reasoning == "done"
    (request,) = server.requests
    assert request["model"] == "gpt-4o" and request["temperature"] == 0.0
    parts = request["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert all(p["image_url"]["url"].startswith("data:image/png;base64,") for p in parts[:2])
    assert parts[0]["image_url"]["url"] != parts[1]["image_url"]["url"]
    assert '"make it red"' in parts[2]["text"]


def test_http_judge_retries_an_unreadable_answer_then_records_failure(images):
    with JudgeServer(script=["I'd rather not say.", GOOD]) as server:
        judgement = RubricJudge(_backend(server.url), retries=1).judge("x", *images)
    assert judgement.ok and len(server.requests) == 2 and server.requests[1]["temperature"] > 0
    with JudgeServer(script=["nope"] * 3) as server:
        results = RubricJudge(_backend(server.url), retries=2).judge_many([JudgeItem("x", *images)])
    assert not results[0].ok and results[0].score_fields()["total"] is None
    assert len(server.requests) == 3 and "after 3 attempts" in results[0].error


def test_batch_rerun_against_the_server_sends_no_request(tmp_path):
    """An interrupted-then-finished batch and a full rerun: the server counts what is asked."""
    from eval.batch import judge_run
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer, items_from_records
    from inference.testing import write_synthetic_eval_set

    records = write_synthetic_eval_set(tmp_path / "data", 4, seed=2)
    pipeline = EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer())
    pipeline.run(items_from_records(records), tmp_path / "runs", "single", progress=False)
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
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer, items_from_records
    from inference.testing import write_synthetic_eval_set

    records = write_synthetic_eval_set(tmp_path / "data", 3, seed=3)
    EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer()).run(
        items_from_records(records), tmp_path / "runs", "multi", progress=False
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
    assert "verifier" not in server.requests[0]["messages"][0]["content"][2]["text"].lower()
    assert "Principles" in server.requests[3]["messages"][0]["content"][2]["text"]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert summary["judged"] == 3 and summary["failed"] == 0
