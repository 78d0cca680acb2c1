"""What faults cost: the judge and the decomposition agent against a fault-injecting server.

    python -m eval.fault_bench [--seeds 3] [--out outputs/bench/faults.json]

A real OpenAI-compatible server on 127.0.0.1 (`inference.faults.FaultyChatServer`) injects the
two fault mixes (the judge meets both, the decomposition agent the mild one) (mild: 10% 500s + 5% each of 429/slow/malformed/dropped; harsh: 30% 500s +
30% malformed 200s) and keeps per-item books. For each run: items judged (or decomposed), requests
sent per item judged, good answers the client threw away (sent by the server, not kept), and
requests for items the server had already answered, and requests beyond one good answer plus the
item's own failures ("extra"). The ideal is 1 request per item plus that
item's own failures, and no re-ask of an answered item.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from PIL import Image

from inference.faults import HARSH_RATES, MILD_RATES, FaultyChatServer, text_of
from inference.fileio import write_json

GOOD_JUDGEMENT = '{"fulfillment": 3, "quality": 2, "preservation": 3, "reasoning": "fine"}'
_ITEM = re.compile(r"#(\d{3,})")
#: Short timeouts and backoffs: the bench measures requests, not waiting.
TIMEOUT_S, SLOW_S = 0.4, 0.8


def item_of(payload: dict[str, Any]) -> str:
    """The `#NNN` item number in the request's text."""
    match = _ITEM.search(text_of(payload))
    return match.group(1) if match else "?"


def _backend(url: str):
    from inference.chat_backends import make_backend
    from inference.http_client import RetryPolicy

    policy = RetryPolicy(timeout_s=TIMEOUT_S, max_retries=4, backoff_s=0.01, max_backoff_s=0.05)
    return make_backend("openai", "judge", base_url=url, api_key_env=None, max_concurrency=8, policy=policy)


def _row(kind: str, rates: str, seed: int, items: int, done: int, server: FaultyChatServer, wall: float):
    stats = server.stats()
    return {
        "what": kind,
        "rates": rates,
        "seed": seed,
        "items": items,
        "done": done,
        "requests": stats["requests"],
        "requests_per_item_done": stats["requests"] / done if done else None,
        "answers_sent": stats["answers_sent"],
        "answers_wasted": stats["answers_sent"] - done,
        "requests_after_answer": stats["requests_after_answer"],
        # requests that were neither an item's one good answer nor one of its own failures
        "requests_beyond_own_failures": stats["requests"] - done - sum(stats["faults"].values()),
        "faults": stats["faults"],
        "exhausted": stats["exhausted"],
        "wall_s": round(wall, 2),
    }


def bench_judge(rates_name: str, n_items: int, seed: int) -> dict[str, Any]:
    from eval.judge import JudgeItem, RubricJudge

    rates = {"mild": MILD_RATES, "harsh": HARSH_RATES}[rates_name]
    original, edited = Image.new("RGB", (32, 32), "blue"), Image.new("RGB", (32, 32), "red")
    items = [JudgeItem(f"edit request #{k:03d}: make it red", original, edited) for k in range(n_items)]
    server = FaultyChatServer(
        lambda payload: GOOD_JUDGEMENT, rates, seed=seed, item_key=item_of, slow_s=SLOW_S, max_requests=4000
    )
    with server:
        t0 = time.perf_counter()
        judgements = RubricJudge(_backend(server.url), retries=2).judge_many(items)
        wall = time.perf_counter() - t0
    return _row("judge", rates_name, seed, n_items, sum(j.ok for j in judgements), server, wall)


def bench_decomposition(rates_name: str, n_items: int, seed: int) -> dict[str, Any]:
    from inference.agents import DecompositionAgent
    from inference.chat import Sampling
    from inference.protocol import Decomposition, render_decomposition

    rates = {"mild": MILD_RATES, "harsh": HARSH_RATES}[rates_name]
    answer = render_decomposition(Decomposition(("recolor",), ("cat",), ("orange",), think="1 edit"))
    server = FaultyChatServer(
        lambda payload: answer, rates, seed=seed, item_key=item_of, slow_s=SLOW_S, max_requests=4000
    )
    images = [Image.new("RGB", (32, 32), "gray")] * n_items
    requests = [f"request #{k:03d}: make the cat orange" for k in range(n_items)]
    with server:
        agent = DecompositionAgent(_backend(server.url), Sampling(max_new_tokens=64), max_attempts=3)
        t0 = time.perf_counter()
        results = agent.decompose(images, requests, list(range(n_items)))
        wall = time.perf_counter() - t0
    return _row(
        "decomposition", rates_name, seed, n_items, sum(r.parsed is not None for r in results), server, wall
    )


def run(seeds: int = 3) -> list[dict[str, Any]]:
    rows = []
    for seed in range(seeds):
        rows.append(bench_judge("mild", 32, seed))
        rows.append(bench_judge("harsh", 16, seed))
        rows.append(bench_decomposition("mild", 32, seed))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="outputs/bench/faults.json")
    args = parser.parse_args(argv)
    rows = run(args.seeds)
    header = f"{'what':14} {'rates':6} {'seed':>4} {'done':>9} {'req':>5} {'req/done':>8} {'wasted':>6} {'re-asked':>8} {'extra':>5}"
    print(header)
    for r in rows:
        per = "inf" if r["requests_per_item_done"] is None else f"{r['requests_per_item_done']:.2f}"
        print(
            f"{r['what']:14} {r['rates']:6} {r['seed']:>4} {r['done']:>4}/{r['items']:<4} {r['requests']:>5}"
            f" {per:>8} {r['answers_wasted']:>6} {r['requests_after_answer']:>8}"
            f" {r['requests_beyond_own_failures']:>5}"
        )
    write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
