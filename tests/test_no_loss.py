"""Nothing received is lost (issue 22), with real processes, real signals and a real server on 127.0.0.1:
every answer is journaled the moment it arrives (a SIGKILLed judge, teacher or pipeline re-buys at
most what was in flight), a dead server stops a stage within a few requests with one line, SIGTERM
exits non-zero keeping what arrived, reruns say what they skipped, and a killed data_prep parent
leaves no worker behind."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from local_server import LocalServer
from PIL import Image

from eval.fault_bench import GOOD_JUDGEMENT, Stage, _stages, bench_dead_server, bench_kill_rerun
from inference.chat import ChatBackend, Sampling
from inference.faults import FaultyChatServer, messages_key
from inference.http_client import CircuitBreaker, RetryPolicy, ServerDown, post
from inference.journal import AnswerJournal, JournaledBackend, request_key
from inference.prompts import user_message

ROOT = Path(__file__).resolve().parents[1]
#: Mild enough that the reruns are quick with the command lines' default backoff.
SOME_FAULTS = {"500": 0.1, "malformed": 0.1, "dropped": 0.05}


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Stage]:
    """The judge, teacher annotation and the pipeline's decomposition as command lines over 10 items."""
    work = tmp_path_factory.mktemp("stages")
    return {s.name: s for s in _stages(work, 10)} | {"_work": work}  # type: ignore[dict-item]


def _deadline(predicate, seconds: float = 20.0, what: str = "condition") -> None:
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------- journal


def test_journal_survives_a_torn_line_and_replays_answers(tmp_path):
    path = tmp_path / "answers.jsonl"
    journal = AnswerJournal(path)
    journal.put("a", ["first"])
    journal.put("b", ["second", "third"])
    journal.close()
    with path.open("ab") as fh:  # a kill in the middle of a write
        fh.write(b'{"key": "c", "texts": ["hal')
    again = AnswerJournal(path)
    assert again.get("a") == ("first",) and again.get("b") == ("second", "third") and "c" not in again
    again.put("c", ["whole"])
    assert AnswerJournal(path).get("c") == ("whole",)
    assert path.read_bytes().endswith(b"\n") and len(path.read_text().splitlines()) == 3
    assert not (tmp_path / "never.jsonl").exists() and len(AnswerJournal(tmp_path / "never.jsonl")) == 0


class ChunkedEngine(ChatBackend):
    """A local engine answering `batch_size` conversations per call, dying (like a SIGTERM in the
    middle of generation) on call number `die_on`."""

    model_id = "engine"
    batch_size = 2

    def __init__(self, die_on: int | None = None):
        self.calls = 0
        self.die_on = die_on

    def generate(self, conversations, sampling):
        self.calls += 1
        if self.calls == self.die_on:
            raise KeyboardInterrupt
        return [[f"answer to {c[0]['content'][-1]['text']}"] for c in conversations]


def test_a_local_engine_keeps_each_finished_chunk_when_interrupted(tmp_path):
    image = Image.new("RGB", (32, 32), "white")
    conversations = [user_message(f"request {i}", [image]) for i in range(6)]
    sampling = Sampling()
    dying = JournaledBackend(ChunkedEngine(die_on=3), tmp_path / "answers.jsonl")
    with pytest.raises(KeyboardInterrupt):
        dying.chat(conversations, sampling)
    kept = AnswerJournal(tmp_path / "answers.jsonl")
    assert len(kept) == 4  # two chunks of two arrived before the interrupt
    engine = ChunkedEngine()
    results = JournaledBackend(engine, tmp_path / "answers.jsonl").chat(conversations, sampling)
    assert [r.texts[0] for r in results] == [f"answer to request {i}" for i in range(6)]
    assert [r.cached for r in results] == [True] * 4 + [False] * 2 and engine.calls == 1
    key = request_key("engine", conversations[0], sampling)
    assert key != request_key("engine", conversations[0], Sampling(seed=1))
    recoloured = user_message("request 0", [Image.new("RGB", (32, 32), "black")])
    assert key != request_key("engine", recoloured, sampling)


@pytest.mark.parametrize("name", ["judge", "annotation", "decomposition"])
def test_sigkill_after_40_percent_loses_at_most_the_requests_in_flight(stages, name):
    """A real process killed with SIGKILL when the server has sent 40% of the good answers (it
    freezes there), then rerun to the end: every answer received before the kill is reused."""

    def journaled_all_it_was_sent(server: FaultyChatServer, out: Path) -> None:
        """Every answer the server sent is in the process's journal (within a deadline), before the kill."""

        def lines() -> int:
            return sum(len(p.read_bytes().splitlines()) for p in out.rglob("*answers.jsonl"))

        _deadline(lambda: lines() >= server.stats()["answers_sent"], 20, "the answers sent to be journaled")

    row = bench_kill_rerun(
        stages[name],
        stages["_work"] / "t",
        10,
        cap_s=120,
        rates=SOME_FAULTS,
        before_kill=journaled_all_it_was_sent,
    )
    assert row["killed"] and row["answers_before_kill"] >= 4
    assert row["rerun_exit"] == 0
    assert row["answers_total"] == 10, row  # not one answer bought twice


# ---------------------------------------------------------------------------------------- dead server


@pytest.mark.parametrize("name", ["judge", "annotation", "decomposition"])
def test_a_server_answering_only_500_stops_each_stage_fast_with_one_line(stages, name):
    row = bench_dead_server(stages[name], stages["_work"] / "t", cap_s=60)
    assert row["stopped"] and row["exit"] == 2, row
    assert row["requests"] < 50, row
    assert (
        "HTTP 500" in row["last_line"] and "127.0.0.1" in row["last_line"] and "stopped" in row["last_line"]
    )
    out = stages["_work"] / "t" / f"dead_{name}"
    assert not (out / "gt.jsonl").exists()  # no empty ground truth from a teacher that never answered
    assert not (out / "scores.jsonl").exists()


def _post_until_down(url: str, breaker: CircuitBreaker, n: int = 20) -> list[str]:
    policy = RetryPolicy(timeout_s=2, max_retries=2, backoff_s=0.001, max_backoff_s=0.001)
    errors = []
    with httpx.Client() as client:
        for _ in range(n):
            try:
                post(client, url, policy, json={}, breaker=breaker)
            except ServerDown as exc:
                errors.append(f"down: {exc}")
                break
            except Exception as exc:  # noqa: BLE001 - the per-request failure
                errors.append(str(exc))
    return errors


@pytest.mark.parametrize(
    ("status", "kind"), [(401, "HTTP 401"), (403, "HTTP 403"), (404, "HTTP 404"), (503, "HTTP 503")]
)
def test_the_breaker_trips_on_a_wrong_key_model_or_dead_server_and_hides_secrets(status, kind, monkeypatch):
    monkeypatch.setenv("SOME_API_KEY", "sk-very-secret-123")
    html = b"<html>\n<body>\n<h1>Server error</h1>\n" + b"x" * 5000 + b"\n</body></html>"
    with LocalServer(lambda request: (status, {"Content-Type": "text/html"}, html)) as server:
        url = f"{server.url.replace('http://', 'http://user:sk-very-secret-123@')}/v1/chat?key=sk-very-secret-123"
        breaker = CircuitBreaker(url)
        errors = _post_until_down(url, breaker)
        assert len(server.requests) <= 10
    down = errors[-1]
    assert down.startswith("down: ") and kind in down and "sk-very-secret" not in down
    assert "\n" not in down and "<html>" not in down and "127.0.0.1" in down
    assert all("\n" not in e and "<h1>" not in e for e in errors)  # one line, no body without --debug


def test_the_server_body_is_shown_only_with_debug_logging(caplog):
    html = b"<html>\n<h1>Bad gateway</h1>\n</html>"
    with LocalServer(lambda request: (400, {"Content-Type": "text/html"}, html)) as server:
        url = server.url + "/v1/chat/completions"
        quiet = _post_until_down(url, CircuitBreaker(url), n=1)
        with caplog.at_level(logging.DEBUG, logger="inference.http_client"):
            loud = _post_until_down(url, CircuitBreaker(url), n=1)
    assert quiet == [f"POST {url} failed: HTTP 400"]
    assert "<h1>Bad gateway</h1>" in loud[0] and "\n" not in loud[0]


def test_connection_refused_trips_the_breaker():
    with LocalServer(lambda request: (200, {}, b"{}")) as server:
        url = server.url + "/v1/chat/completions"
    errors = _post_until_down(url, CircuitBreaker(url))  # nobody listens there any more
    assert "connection refused" in errors[-1] and errors[-1].startswith("down: ")


def test_sporadic_500s_never_trip_the_breaker():
    answers = iter([500] * 5 + [200] + [500] * 7 + [200] * 3)
    with LocalServer(lambda request: (next(answers, 200), {}, b'{"ok": true}')) as server:
        breaker = CircuitBreaker(server.url, trip_after=8, trip_after_answers=12)
        policy = RetryPolicy(timeout_s=2, max_retries=10, backoff_s=0.001, max_backoff_s=0.001)
        with httpx.Client() as client:
            assert post(client, server.url, policy, json={}, breaker=breaker) == {"ok": True}
            assert post(client, server.url, policy, json={}, breaker=breaker) == {"ok": True}
    assert breaker.reason is None and breaker.successes == 2


# ---------------------------------------------------------------------------------------- SIGTERM


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_keeps_every_answer_received_and_exits_non_zero(stages, tmp_path, signum):
    """The judge gets SIGTERM (or Ctrl-C) while requests hang on a frozen server (after 4 answers
    arrived): it exits 143 (130) at once with one line, its journal is whole, and a rerun asks only
    for the rest."""
    stage = stages["judge"]
    server = FaultyChatServer(stage.answer, {}, item_key=messages_key, hold_after=4, max_seconds=60)
    with server:
        proc = subprocess.Popen(
            stage.argv(server.url, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert server.held.wait(30), "the server never froze"
        journal = tmp_path / "cache" / "answers.jsonl"
        _deadline(lambda: journal.is_file() and len(journal.read_bytes().splitlines()) >= 4, 20, "4 answers")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 128 + signum, err
        assert err.strip().splitlines()[-1].startswith(f"eval judge: stopped by {signum.name}")
        assert len(AnswerJournal(tmp_path / "cache" / "answers.jsonl")) == 4
        server.release()
        rerun = subprocess.run(stage.argv(server.url, tmp_path), capture_output=True, text=True, timeout=60)
        assert rerun.returncode == 0, rerun.stderr
        assert server.stats()["answers_sent"] == 10  # the four kept were not bought again


# ---------------------------------------------------------------------------------------- reruns


def test_a_rerun_over_failed_items_says_so_and_exits_non_zero(tmp_path):
    """Every image is a 0-byte file: `missing_image` (as in a parquet row), exit 1; the rerun names
    the skipped failures and --retry-errors, and still exits 1 (nothing usable)."""
    from inference.records import Record, write_records

    images = tmp_path / "records" / "images"
    images.mkdir(parents=True)
    records = []
    for i in range(3):
        (images / f"{i}.png").write_bytes(b"")
        records.append(Record(f"item{i}", "t", "make it red", images / f"{i}.png"))
    write_records(tmp_path / "records", records)
    argv = [
        sys.executable,
        "-m",
        "inference",
        "--records",
        str(tmp_path / "records"),
        "--out",
        str(tmp_path / "o"),
    ]
    argv += ["--mode", "original", "--editor", "tool", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 1 and "missing_image=3" in first.stderr
    trace = json.loads((tmp_path / "o" / "original" / "item0.json").read_text())
    assert trace["error"].startswith("missing_image:") and "0 bytes" in trace["error"]
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 1, again.stderr
    assert (
        "skipped 3 item(s) that failed in an earlier run" in again.stderr and "--retry-errors" in again.stderr
    )
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped_failed"] == 3


# ---------------------------------------------------------------------------------------- orphans


def _children(pid: int) -> set[int]:
    try:
        return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except FileNotFoundError:
        return set()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the workers")
def test_sigkill_of_the_data_prep_parent_ends_its_workers(tmp_path):
    """`data_prep.build eval --workers 2` killed with SIGKILL: its two worker processes end too."""
    import csv

    folder = tmp_path / "bench"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (900, 900), "gray").save(folder / "images" / "in.png")
    with (folder / "test.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["orig_img", "instruction", "edit_images"])
        for i in range(3000):
            writer.writerow(["images/in.png", f"please remove the person number {i}", "images/in.png"])
    argv = [
        sys.executable,
        "-m",
        "data_prep.build",
        "eval",
        "--preset",
        "realedit",
        "--input",
        str(folder / "test.csv"),
    ]
    argv += ["--out", str(tmp_path / "out"), "--sample", "-1", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        _deadline(lambda: len(_children(proc.pid)) >= 2 or proc.poll() is not None, 60, "two workers")
        workers = _children(proc.pid)
        assert proc.poll() is None and len(workers) >= 2, "the build ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _deadline(lambda: not any(_alive(w) for w in workers), 10, f"workers {workers} to end")
    finally:
        if proc.poll() is None:
            proc.kill()
        for worker in workers | _children(proc.pid):  # never leave an orphan, even when the test fails
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)


# ---------------------------------------------------------------------------------------- flags


def test_every_http_client_has_a_timeout_flag():
    from data_prep.build import main as data_prep_main  # noqa: F401 - the flag is parsed below
    from eval.cli import _parser, make_scorer
    from inference.cli import build_parser

    args = _parser().parse_args(
        [
            "judge",
            "--run",
            "r",
            "--out",
            "o",
            "--benchmark",
            "b",
            "--model",
            "m",
            "--timeout",
            "7.5",
            "--api-key-env",
            "",
        ]
    )
    assert make_scorer(args).backend.policy.timeout_s == 7.5
    assert build_parser().parse_args(["--image", "x", "--out", "o", "--timeout", "3"]).timeout == 3.0
    help_text = subprocess.run(
        [sys.executable, "-m", "data_prep.build", "annotate", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert "--timeout" in help_text
    assert GOOD_JUDGEMENT  # the bench's answer is what the judge parses


def test_a_zero_byte_image_has_one_reason_wherever_it_comes_from(tmp_path):
    from inference.fileio import BadImage, load_image

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for source in (empty, str(empty), b"", {"bytes": b"", "path": None}, {"bytes": None, "path": str(empty)}):
        with pytest.raises(BadImage) as info:
            load_image(source)
        assert info.value.reason == "missing_image", source


def test_a_dead_editor_endpoint_stops_the_pipeline_without_failed_traces(tmp_path):
    """A hosted editor answering only 503: the run stops (ServerDown) after a few requests instead of
    failing every item one by one (each failed trace is an item a rerun skips)."""
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer
    from inference.records import read_records
    from inference.synthetic_items import write_synthetic_eval_set

    records = list(read_records(write_synthetic_eval_set(tmp_path / "data", 12, seed=1)))
    with LocalServer(lambda request: (503, {}, b'{"error": {"message": "overloaded"}}')) as server:
        editor = make_editor("openai_images", base_url=server.url, api_key_env=None, backoff_s=0.001)
        pipeline = EditingPipeline(editor, OracleDecomposer(), OracleSequencer(), batch_size=4)
        with pytest.raises(ServerDown, match="HTTP 503"):
            pipeline.run(records, tmp_path / "runs", "single", progress=False)
        assert len(server.requests) < 20
    # only the first item, whose own retries ran out before the breaker had seen enough, has a trace
    traces = list((tmp_path / "runs" / "single").glob("*.json"))
    assert len(traces) <= 1 and all("HTTP 503" in json.loads(t.read_text())["error"] for t in traces)
