"""The judge, the decomposition agent and the teacher annotator against a real fault-injecting
OpenAI-compatible server on 127.0.0.1 (`inference.faults.FaultyChatServer`, bounded in requests and
time): every good answer is kept, only failed items are asked again, and retries are bounded."""

from __future__ import annotations

import pytest
from PIL import Image

from eval.fault_bench import GOOD_JUDGEMENT, item_of
from eval.judge import JudgeItem, RubricJudge
from inference.agents import DecompositionAgent
from inference.chat import Sampling
from inference.chat_backends import OpenAIBackend
from inference.faults import HARSH_RATES, MILD_RATES, FaultyChatServer
from inference.http_client import RetryPolicy
from inference.protocol import Decomposition, render_decomposition

POLICY = RetryPolicy(timeout_s=0.4, max_retries=4, backoff_s=0.005, max_backoff_s=0.02)


def _backend(server: FaultyChatServer, policy: RetryPolicy = POLICY) -> OpenAIBackend:
    return OpenAIBackend("judge", base_url=server.url, api_key_env=None, max_concurrency=8, policy=policy)


def _judge_items(n: int) -> list[JudgeItem]:
    original, edited = Image.new("RGB", (32, 32), "blue"), Image.new("RGB", (32, 32), "red")
    return [JudgeItem(f"edit request #{k:03d}: make it red", original, edited) for k in range(n)]


def _assert_each_item_cost_one_answer_plus_its_failures(server: FaultyChatServer) -> None:
    for key, books in server.items.items():
        assert books.answered == 1, f"item {key} answered {books.answered} times"
        assert books.after_answer == 0, f"item {key} asked again after its answer"
        assert books.requests == 1 + sum(books.faults.values()), (key, books)


@pytest.mark.parametrize("seed", [0, 1])
def test_harsh_faults_every_item_judged_and_no_answer_bought_twice(seed):
    """30% 500s and 30% malformed 200s, 16 judge requests: all judged, nothing asked twice."""
    server = FaultyChatServer(
        lambda payload: GOOD_JUDGEMENT,
        HARSH_RATES,
        seed=seed,
        item_key=item_of,
        max_requests=400,
        max_seconds=60,
    )
    with server:
        judgements = RubricJudge(_backend(server), retries=2).judge_many(_judge_items(16))
    stats = server.stats()
    assert all(j.ok for j in judgements), [j.error for j in judgements if not j.ok]
    assert len(server.items) == 16 and not stats["exhausted"]
    assert stats["faults"].get("malformed", 0) > 0 and stats["faults"].get("500", 0) > 0
    _assert_each_item_cost_one_answer_plus_its_failures(server)


def test_mild_faults_with_timeouts_and_drops_decomposition_keeps_every_answer():
    answer = render_decomposition(Decomposition(("recolor",), ("cat",), ("orange",), think="1 edit"))
    server = FaultyChatServer(
        lambda payload: answer,
        MILD_RATES,
        seed=0,
        item_key=item_of,
        slow_s=0.6,
        max_requests=400,
        max_seconds=60,
    )
    n = 24
    with server:
        agent = DecompositionAgent(_backend(server), Sampling(max_new_tokens=32), max_attempts=3)
        results = agent.decompose(
            [Image.new("RGB", (32, 32))] * n, [f"#{k:03d} cat" for k in range(n)], list(range(n))
        )
    assert all(r.parsed is not None for r in results), [r.error for r in results if r.error]
    faults = server.stats()["faults"]
    assert {"500", "429", "slow", "dropped", "malformed"} <= set(faults), faults
    _assert_each_item_cost_one_answer_plus_its_failures(server)


def test_per_item_retries_are_bounded_and_failures_recorded():
    """A server that always fails: each item costs exactly (HTTP tries) x (judge attempts) requests
    (with the circuit breaker out of the way: it would stop this dead server after 8 requests)."""
    policy = RetryPolicy(timeout_s=0.4, max_retries=2, backoff_s=0.001, max_backoff_s=0.002)
    server = FaultyChatServer(
        lambda payload: GOOD_JUDGEMENT, {"500": 1.0}, item_key=item_of, max_requests=200
    )
    with server:
        backend = OpenAIBackend(
            "judge", base_url=server.url, api_key_env=None, max_concurrency=8, policy=policy, trip_after=1000
        )
        judgements = RubricJudge(backend, retries=1).judge_many(_judge_items(4))
    assert not any(j.ok for j in judgements)
    assert all("HTTP 500" in j.error and "after 2 attempts" in j.error for j in judgements)
    assert [b.requests for b in server.items.values()] == [3 * 2] * 4


def test_a_request_refused_for_good_is_not_resent():
    server = FaultyChatServer(lambda payload: GOOD_JUDGEMENT, {}, item_key=item_of)
    with server:
        backend = _backend(server)
        backend.url = backend.url.replace("/chat/completions", "/nowhere")  # the server answers 404
        judgements = RubricJudge(backend, retries=3).judge_many(_judge_items(2))
    assert not any(j.ok for j in judgements) and "HTTP 404" in judgements[0].error
    assert server.total == 2  # one request per item: a 404 is final


def test_the_server_is_bounded():
    server = FaultyChatServer(lambda payload: GOOD_JUDGEMENT, {"500": 1.0}, item_key=item_of, max_requests=5)
    policy = RetryPolicy(timeout_s=0.4, max_retries=9, backoff_s=0.001, max_backoff_s=0.002)
    with server:
        (judgement,) = RubricJudge(_backend(server, policy), retries=0).judge_many(_judge_items(1))
    assert not judgement.ok and server.stats()["exhausted"] and server.total == 10
