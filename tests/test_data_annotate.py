"""Teacher-VLM annotation: validation and retries, bounded concurrency, the on-disk cache, key
hygiene; once through a scripted ChatBackend and once over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading

import pytest
from local_server import LocalServer, chat_completion, request_json

from data_prep.build import main
from data_prep.groundtruth import TeacherAnnotator, read_ground_truth, redact, write_annotations
from data_prep.report import Report
from inference.chat import ChatBackend
from inference.protocol import render_decomposition
from inference.records import Record, read_records
from inference.synthetic_items import eval_record, generate_items

SECRET = "sk-test-very-secret-0123456789"


def good_answer(request: str) -> str:
    """A teacher answer: the synthetic ground truth for that request."""
    return render_decomposition(GT_BY_REQUEST[request])


ITEMS = list(generate_items(12, seed=5))
GT_BY_REQUEST = {i.request: i.decomposition for i in ITEMS}


def request_of(conversation) -> str:
    text = conversation[0]["content"][-1]["text"]
    return text.split('Request: "', 1)[1].split('"\n', 1)[0]


class ScriptedTeacher(ChatBackend):
    """Answers from a script per request (then the right answer); records calls and concurrency."""

    model_id = "scripted-teacher"

    def __init__(self, script=None, fail_first=0, await_overlap=False):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.fail_first = fail_first
        #: hold each call until two are in flight at once (the concurrency test; no timing window)
        self.await_overlap = await_overlap
        self.overlapped = threading.Event()
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def generate(self, conversations, sampling):
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fail = self.fail_first > 0
            self.fail_first -= 1
            if self.in_flight >= 2:
                self.overlapped.set()
        try:
            if self.await_overlap:
                self.overlapped.wait(timeout=30)
            if fail:
                raise ConnectionError(f"upstream said 401 for Authorization: Bearer {SECRET}")
            out = []
            for conversation in conversations:
                request = request_of(conversation)
                queue = self.script.get(request)
                out.append([queue.pop(0) if queue else good_answer(request)])
            return out
        finally:
            with self.lock:
                self.in_flight -= 1


@pytest.fixture
def records(tmp_path):
    folder = tmp_path / "records"
    return [eval_record(item, folder) for item in ITEMS]


def test_annotations_are_validated_retried_cached_and_counted(tmp_path, records, monkeypatch):
    monkeypatch.setenv("TEACHER_API_KEY", SECRET)
    bad = ITEMS[0].request
    hopeless = ITEMS[1].request
    teacher = ScriptedTeacher(
        script={bad: ["no tags at all"], hopeless: ["<action>[]</action>"] * 10}, await_overlap=True
    )
    annotator = TeacherAnnotator(teacher, tmp_path / "cache", max_concurrency=3, invalid_retries=2)
    report = Report()
    results = list(annotator.annotate(records, report))
    assert [r.id for r in results] == [i.id for i in ITEMS]  # input order
    by_id = {r.id: r for r in results}
    assert by_id[ITEMS[0].id].decomposition.to_json() == ITEMS[0].decomposition.to_json()
    assert by_id[ITEMS[0].id].attempts == 2
    assert by_id[ITEMS[1].id].decomposition is None and by_id[ITEMS[1].id].error == "invalid_answer"
    assert report.kept == 11 and report.skipped == {"invalid_answer": 1}
    assert report.normalised["invalid_answer_retried"] == 1
    assert 1 < teacher.max_in_flight <= 3
    calls = teacher.calls
    assert calls == 12 + 1 + 2
    # a rerun costs nothing: every answer (also the rejected ones) comes from the cache
    rerun = Report()
    again = list(TeacherAnnotator(teacher, tmp_path / "cache", max_concurrency=3).annotate(records, rerun))
    assert teacher.calls == calls and rerun.normalised["cached"] == 11
    assert [a.decomposition for a in again] == [r.decomposition for r in results]
    # accepted annotations round-trip through the importer
    out = tmp_path / "gt.jsonl"
    assert write_annotations(out, results, teacher.model_id) == 11
    truth = read_ground_truth(out)
    assert truth[ITEMS[3].id] == ITEMS[3].decomposition.__class__.from_ground_truth(
        ITEMS[3].decomposition.to_json()
    )


def test_backend_failures_are_retried_then_reported_without_the_key(tmp_path, records, monkeypatch):
    monkeypatch.setenv("TEACHER_API_KEY", SECRET)
    teacher = ScriptedTeacher(fail_first=2)
    annotator = TeacherAnnotator(
        teacher, tmp_path / "cache", max_concurrency=1, call_retries=3, sleep=lambda s: None
    )
    report = Report()
    results = list(annotator.annotate(records[:2], report))
    assert all(r.decomposition is not None for r in results) and report.kept == 2
    broken = ScriptedTeacher(fail_first=100)
    annotator = TeacherAnnotator(
        broken, tmp_path / "cache2", max_concurrency=2, call_retries=1, sleep=lambda s: None
    )
    report = Report()
    results = list(annotator.annotate(records[:3], report))
    assert report.skipped == {"teacher_error": 3}
    written = json.dumps(report.to_json()) + "".join(str(r) for r in results)
    assert SECRET not in written and "***" in written
    assert redact(f"key={SECRET}") == "key=***"


def test_unreadable_image_is_a_counted_error(tmp_path, records):
    broken = Record("x", "synthetic", "remove the red circle", tmp_path / "nope.png")
    report = Report()
    results = list(TeacherAnnotator(ScriptedTeacher(), tmp_path / "c").annotate([broken, records[0]], report))
    assert results[0].decomposition is None and results[1].decomposition is not None
    assert report.skipped == {"teacher_error": 1}


class TeacherServer(LocalServer):
    """A real OpenAI-compatible `POST /v1/chat/completions` on 127.0.0.1 answering the synthetic truth;
    `bodies` are the JSON requests, `headers` their Authorization values."""

    def __init__(self):
        super().__init__(self._respond)

    def _respond(self, request):
        return 200, {}, chat_completion(good_answer(request_of(request_json(request)["messages"])))

    @property
    def bodies(self):
        return [request_json(r) for r in self.requests]

    @property
    def headers(self):
        return [r["headers"].get("authorization", "") for r in self.requests]

    @property
    def url(self):
        return super().url + "/v1"


def test_annotate_cli_over_http_with_the_shared_openai_backend(tmp_path, records, monkeypatch):
    pytest.importorskip("httpx")
    pytest.importorskip("inference.chat_backends")
    from inference.records import write_records

    folder = tmp_path / "records"
    write_records(folder, records)
    monkeypatch.setenv("TEACHER_API_KEY", SECRET)
    out = tmp_path / "gt.jsonl"
    cache = tmp_path / "cache"
    with TeacherServer() as server:
        argv = ["annotate", "--records", str(folder), "--out", str(out), "--model", "gpt-4o"]
        argv += ["--base-url", server.url, "--api-key-env", "TEACHER_API_KEY", "--cache", str(cache)]
        assert main(argv + ["--concurrency", "2"]) == 0
        assert len(server.requests) == len(ITEMS)
        assert main(argv) == 0  # rerun: all from cache
        assert len(server.requests) == len(ITEMS)
    request = server.bodies[0]
    assert request["model"] == "gpt-4o" and request["temperature"] == 0.0
    assert [p["type"] for p in request["messages"][0]["content"]] == ["image_url", "text"]
    assert server.headers[0] == f"Bearer {SECRET}"  # the key goes to the server only
    truth = read_ground_truth(out)
    assert len(truth) == len(ITEMS)
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["kept"] == len(ITEMS) and report["normalised"]["cached"] == len(ITEMS)
    for path in [out, out.with_suffix(".report.json"), *cache.rglob("*.json*")]:
        assert SECRET not in path.read_text()
    assert main(["attach", "--records", str(folder), "--ground-truth", str(out)]) == 0
    assert all(r.decomposition is not None for r in read_records(folder))
