"""`python -m eval.bench`: judge-side throughput on CPU (no model: the backend answers at once).

* parser: rubric answers/s over mixed answer styles, against `json.loads` on the bare-JSON subset
  (the floor any parser pays);
* batch judging of a 64-item synthetic run folder: cold (load, hash, ask, cache) vs a cached rerun;
* report generation from the fixture score files;
* the fault bench (`python -m eval.fault_bench`): requests per item under injected faults, answers
  bought per item when a judge, teacher or pipeline is SIGKILLed and rerun, and how fast a dead
  server stops each of them, next to the figures before the answer journal and circuit breaker.

Prints tables and writes outputs/bench/eval.json and outputs/bench/faults.json.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from eval.parsing import parse_judge_answer
from inference.chat import ChatBackend

ANSWERS = [
    '{"fulfillment": 3, "quality": 2, "preservation": 3, "reasoning": "The coat is red; the rest is intact."}',
    'Here is my evaluation.\n```json\n{"fulfillment": "4", "quality": 2.5, "preservation": 1}\n```',
    "1. **Request Fulfillment** (0-4 points): 3/4\n2. **Image Quality** (0-3 points) - 2\n"
    "3. **Preservation**: 3 out of 3\nReasoning: the edit is clean.",
    "### Request Fulfillment\nScore: 2\n### Image Quality\nScore: 1\n### Preservation\nScore: 0",
    "I cannot evaluate these images because they are identical.",
]


class InstantBackend(ChatBackend):
    model_id = "bench-instant"

    def generate(self, conversations, sampling):
        return [[ANSWERS[0]] * sampling.n for _ in conversations]


def _rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def bench_parser(repeat: int = 2000) -> dict[str, float]:
    texts = ANSWERS * (repeat // len(ANSWERS))
    bare = [ANSWERS[0]] * len(texts)
    ours = _rate(lambda: [parse_judge_answer(t) for t in texts], len(texts))
    ours_bare = _rate(lambda: [parse_judge_answer(t) for t in bare], len(bare))
    peer = _rate(lambda: [json.loads(t) for t in bare], len(bare))
    return {
        "parse_mixed_per_s": ours,
        "parse_bare_json_per_s": ours_bare,
        "json_loads_per_s": peer,
        "bare_json_ratio_vs_json_loads": ours_bare / peer,
    }


def bench_batch(n_items: int = 64) -> dict[str, float]:
    from eval.batch import judge_run
    from eval.judge import RubricJudge
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer
    from inference.records import read_records
    from inference.synthetic_items import write_synthetic_eval_set

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = write_synthetic_eval_set(root / "data", n_items, seed=0)
        EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer()).run(
            read_records(records), root / "runs", "multi", progress=False
        )
        judge = RubricJudge(InstantBackend())
        kwargs = dict(benchmark="synthetic", cache_dir=root / "cache", progress=False)
        cold = _rate(lambda: judge_run(root / "runs" / "multi", judge, root / "s.jsonl", **kwargs), n_items)
        warm = _rate(lambda: judge_run(root / "runs" / "multi", judge, root / "s.jsonl", **kwargs), n_items)
    return {"batch_cold_items_per_s": cold, "batch_cached_items_per_s": warm, "cached_speedup": warm / cold}


def bench_report() -> dict[str, float]:
    from eval.report import build_report

    fixtures = Path(__file__).resolve().parent / "fixtures"
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_report(
            [fixtures / "scores_main.jsonl", fixtures / "scores_ablations.jsonl"],
            tmp,
            human_csv=fixtures / "human_scores.csv",
            human_filter={"evaluator": "GPT-4o", "editor": "flux_kontext", "method": "imageedit_r1"},
            metrics_logs=[("fixture", fixtures / "metrics.jsonl")],
        )
        return {"report_seconds": time.perf_counter() - start}


def main() -> None:
    results = {**bench_parser(), **bench_batch(), **bench_report()}
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:>12.3f}")
    from inference.fileio import write_text

    out = write_text(Path("outputs/bench/eval.json"), json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    from eval import fault_bench

    print("== eval.fault_bench")
    fault_bench.main([])


if __name__ == "__main__":
    main()
