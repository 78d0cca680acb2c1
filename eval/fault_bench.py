"""What faults cost: the judge and the decomposition agent against a fault-injecting server.

    python -m eval.fault_bench [--seeds 3] [--items 36] [--out outputs/bench/faults.json]

A real OpenAI-compatible server on 127.0.0.1 (`inference.faults.FaultyChatServer`) injects the
two fault mixes (the judge meets both, the decomposition agent the mild one) (mild: 10% 500s + 5% each of 429/slow/malformed/dropped; harsh: 30% 500s +
30% malformed 200s) and keeps per-item books. For each run: items judged (or decomposed), requests
sent per item judged, good answers the client threw away (sent by the server, not kept), and
requests for items the server had already answered, and requests beyond one good answer plus the
item's own failures ("extra"). The ideal is 1 request per item plus that
item's own failures, and no re-ask of an answered item.

Then the three command lines that buy answers (`python -m eval judge`, `python -m data_prep.build
annotate`, `python -m inference` with a model decomposer), each a real process:

* kill and rerun: under 30% 500s + 30% malformed + 5% dropped connections, the process is killed
  with SIGKILL once the server has sent 40% of the good answers (the server freezes at that
  moment, `FaultyChatServer(hold_after=...)`), then run again to the end. "bought/item" is the good
  answers the server sent over both runs per item: 1.0 is ideal, the goal is at most 1.15;
* dead server: a server that answers only 500; seconds and requests until the process stops
  (goal: under 10 s and under 50 requests).

`eval/fault_bench_baseline.json` holds these figures measured before answers were journaled and
the circuit breaker existed; they are printed next to today's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from inference.faults import HARSH_RATES, MILD_RATES, FaultyChatServer, messages_key, text_of
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


#: The kill-and-rerun mix of the issue, and a dead server.
KILL_RATES: dict[str, float] = {"500": 0.30, "malformed": 0.30, "dropped": 0.05}
DEAD_RATES: dict[str, float] = {"500": 1.0}
KILL_AT = 0.4
BASELINE = Path(__file__).resolve().parent / "fault_bench_baseline.json"


@dataclass
class Stage:
    """One command line that buys answers: its argv for a server URL, and the good answer to a request."""

    name: str
    argv: Callable[[str, Path], list[str]]
    answer: Callable[[dict[str, Any]], str]


def _stages(work: Path, n_items: int) -> list[Stage]:
    """The judge over a pipeline run folder, teacher annotation and the pipeline's decomposition,
    all over one synthetic eval set of `n_items` (answers: the items' ground truth)."""
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer
    from inference.protocol import render_decomposition
    from inference.records import read_records
    from inference.synthetic_items import write_synthetic_eval_set

    records_dir = write_synthetic_eval_set(work / "data", n_items, seed=0)
    records = list(read_records(records_dir))
    EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer()).run(
        records, work / "runs", "single", progress=False
    )
    truth = {r.instruction: render_decomposition(r.decomposition) for r in records}

    def decomposition_answer(payload: dict[str, Any]) -> str:
        text = text_of(payload)
        return next((a for request, a in truth.items() if f'"{request}"' in text or request in text), "")

    py = [sys.executable, "-m"]
    quiet = ["--no-progress"]
    return [
        Stage(
            "judge",
            lambda url, out: (
                py
                + [
                    "eval",
                    "judge",
                    "--run",
                    str(work / "runs" / "single"),
                    "--out",
                    str(out / "scores.jsonl"),
                ]
                + ["--benchmark", "synthetic", "--backend", "openai", "--model", "judge", "--base-url", url]
                + ["--api-key-env", "", "--cache", str(out / "cache"), *quiet]
            ),
            lambda payload: GOOD_JUDGEMENT,
        ),
        Stage(
            "annotation",
            lambda url, out: (
                py
                + [
                    "data_prep.build",
                    "annotate",
                    "--records",
                    str(records_dir),
                    "--out",
                    str(out / "gt.jsonl"),
                ]
                + [
                    "--model",
                    "teacher",
                    "--base-url",
                    url,
                    "--api-key-env",
                    "",
                    "--cache",
                    str(out / "cache"),
                ]
                + quiet
            ),
            decomposition_answer,
        ),
        Stage(
            "decomposition",
            lambda url, out: (
                py
                + ["inference", "--records", str(records_dir), "--out", str(out / "runs"), "--mode", "single"]
                + ["--editor", "tool", "--backend", "openai", "--llm-model", "agent"]
                + [
                    "--llm-opt",
                    f"base_url={url}",
                    "--llm-opt",
                    "api_key_env=",
                    "--sequencer",
                    "template",
                    *quiet,
                ]
            ),
            decomposition_answer,
        ),
    ]


def _start(argv: list[str], log: Path) -> subprocess.Popen:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with log.open("ab") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=fh, env=env, start_new_session=True)


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def bench_kill_rerun(
    stage: Stage,
    work: Path,
    n_items: int,
    seed: int = 0,
    cap_s: float = 300.0,
    rates: dict[str, float] = KILL_RATES,
    before_kill: Callable[[FaultyChatServer, Path], None] | None = None,
) -> dict[str, Any]:
    """SIGKILL once 40% of the good answers were sent, then a rerun to the end: answers bought per item."""
    out = work / f"kill_{stage.name}"
    out.mkdir(parents=True, exist_ok=True)
    hold = math.ceil(KILL_AT * n_items)
    server = FaultyChatServer(
        stage.answer,
        rates,
        seed=seed,
        item_key=messages_key,
        hold_after=hold,
        max_requests=20000,
        max_seconds=2 * cap_s,
    )
    with server:
        proc = _start(stage.argv(server.url, out), out / "log.txt")
        deadline = time.monotonic() + cap_s
        while not server.held.wait(0.05) and proc.poll() is None and time.monotonic() < deadline:
            pass
        if before_kill is not None and proc.poll() is None:
            before_kill(server, out)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        first = server.stats()
        server.release()
        t0 = time.perf_counter()
        rerun = _start(stage.argv(server.url, out), out / "log.txt")
        rc = _wait(rerun, cap_s)
        wall = time.perf_counter() - t0
        stats = server.stats()
    return {
        "what": stage.name,
        "test": "kill_rerun",
        "items": n_items,
        "killed": killed,
        "answers_before_kill": first["answers_sent"],
        "answers_total": stats["answers_sent"],
        "answers_bought_twice": stats["answers_sent"] - n_items,
        "bought_per_item": stats["answers_sent"] / n_items,
        "requests_total": stats["requests"],
        "rerun_exit": rc,
        "rerun_wall_s": round(wall, 2),
    }


def bench_dead_server(stage: Stage, work: Path, cap_s: float = 60.0) -> dict[str, Any]:
    """A server answering only 500: seconds and requests until the command stops (or `cap_s`)."""
    out = work / f"dead_{stage.name}"
    out.mkdir(parents=True, exist_ok=True)
    server = FaultyChatServer(stage.answer, DEAD_RATES, item_key=messages_key, max_requests=100000)
    with server:
        t0 = time.perf_counter()
        proc = _start(stage.argv(server.url, out), out / "log.txt")
        rc = _wait(proc, cap_s)
        wall = time.perf_counter() - t0
        ended = time.monotonic()
        stats = server.stats()
        first = server.first_request_at
    lines = (out / "log.txt").read_text(errors="replace").strip().splitlines()
    return {
        "what": stage.name,
        "test": "dead_server",
        "exit": rc,
        "stopped": rc is not None,
        "seconds": round(wall, 2),
        "seconds_after_first_request": None if first is None else round(ended - first, 2),
        "requests": stats["requests"],
        "last_line": lines[-1][:300] if lines else "",
        "log_lines": len(lines),
    }


def run_processes(n_items: int = 36, dead_cap_s: float = 60.0) -> list[dict[str, Any]]:
    """The kill-and-rerun and dead-server rows of every stage, in a temporary folder."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stages = _stages(work, n_items)
        for stage in stages:
            rows.append(bench_kill_rerun(stage, work, n_items))
        for stage in stages:
            rows.append(bench_dead_server(stage, work, dead_cap_s))
    return rows


def print_processes(rows: list[dict[str, Any]], baseline: list[dict[str, Any]] | None = None) -> None:
    """The process rows, with the baseline's figure of the same row where there is one."""
    before = {(r["what"], r["test"]): r for r in baseline or []}
    print(
        f"{'kill+rerun':14} {'items':>5} {'at kill':>7} {'total':>6} {'twice':>5} {'bought/item':>11}"
        f" {'before':>7} {'exit':>4}  (goal <= 1.15; twice: answers in flight at the kill)"
    )
    for r in rows:
        if r["test"] == "kill_rerun":
            b = before.get((r["what"], "kill_rerun"))
            was = f"{b['bought_per_item']:.2f}" if b else "-"
            print(
                f"{r['what']:14} {r['items']:>5} {r['answers_before_kill']:>7} {r['answers_total']:>6}"
                f" {r['answers_total'] - r['items']:>5} {r['bought_per_item']:>11.2f} {was:>7}"
                f" {r['rerun_exit']!s:>4}"
            )
    print(
        f"{'dead server':14} {'seconds':>7} {'after 1st':>9} {'requests':>8} {'before':>16} {'exit':>4}"
        "  (goal < 10 s, < 50 requests; seconds include the process start)"
    )
    for r in rows:
        if r["test"] == "dead_server":
            b = before.get((r["what"], "dead_server"))
            was = "-" if not b else f"{'>' if not b['stopped'] else ''}{b['seconds']:.0f}s/{b['requests']}"
            secs = f"{r['seconds']:.1f}" if r["stopped"] else f">{r['seconds']:.0f}"
            after = r.get("seconds_after_first_request")
            after = "-" if after is None else f"{after:.1f}"
            print(f"{r['what']:14} {secs:>7} {after:>9} {r['requests']:>8} {was:>16} {r['exit']!s:>4}")
            print(f"{'':14} last line: {r['last_line']}")


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
    parser.add_argument("--items", type=int, default=36, help="items of the process benches")
    parser.add_argument(
        "--dead-cap-s", type=float, default=60.0, help="give up on a dead-server run after this"
    )
    parser.add_argument("--only", choices=("requests", "processes"), help="one of the two benches")
    parser.add_argument(
        "--save-baseline", action="store_true", help=f"write the process rows to {BASELINE.name}"
    )
    args = parser.parse_args(argv)
    processes = [] if args.only == "requests" else run_processes(args.items, args.dead_cap_s)
    if processes:
        baseline = json.loads(BASELINE.read_text()) if BASELINE.is_file() and not args.save_baseline else None
        print_processes(processes, baseline)
        if args.save_baseline:
            write_json(BASELINE, processes)
    rows = [] if args.only == "processes" else run(args.seeds)
    if not rows:
        write_json(args.out, processes)
        return 0
    header = f"{'what':14} {'rates':6} {'seed':>4} {'done':>9} {'req':>5} {'req/done':>8} {'wasted':>6} {'re-asked':>8} {'extra':>5}"
    print(header)
    for r in rows:
        per = "inf" if r["requests_per_item_done"] is None else f"{r['requests_per_item_done']:.2f}"
        print(
            f"{r['what']:14} {r['rates']:6} {r['seed']:>4} {r['done']:>4}/{r['items']:<4} {r['requests']:>5}"
            f" {per:>8} {r['answers_wasted']:>6} {r['requests_after_answer']:>8}"
            f" {r['requests_beyond_own_failures']:>5}"
        )
    write_json(args.out, rows + processes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
