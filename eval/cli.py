"""`python -m eval {judge,reference,report,curves}`: see eval/README.md."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.chat import Sampling
from inference.outcome import add_outcome_flags, run_cli, setup_logging, verdict

BACKEND_KINDS = ("transformers", "vllm", "openai", "gemini")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def _labelled_path(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    return (label, path) if sep else (Path(text).parent.name or text, text)


def _csv_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    judge = sub.add_parser("judge", help="score a pipeline run folder with a VLM judge or verifier")
    judge.add_argument("--run", required=True, type=Path, help="pipeline run folder <out>/<mode>/")
    judge.add_argument("--out", required=True, type=Path, help="score file to write (JSONL)")
    judge.add_argument("--benchmark", required=True, help="benchmark label, e.g. PSR, RealEdit, synthetic")
    judge.add_argument("--backend", choices=BACKEND_KINDS, default="openai")
    judge.add_argument("--model", required=True, help="judge model: API name, hub id or local folder")
    judge.add_argument(
        "--base-url", help="OpenAI-compatible server URL (openai backend), e.g. http://127.0.0.1:8000/v1"
    )
    judge.add_argument(
        "--api-key-env", help="environment variable holding the API key ('' for none; default per backend)"
    )
    judge.add_argument("--scorer", choices=("rubric", "verifier"), default="rubric")
    judge.add_argument("--evaluator", help="evaluator label in the score file (default: the model id)")
    judge.add_argument("--method", help="method label (default: the trace's mode)")
    judge.add_argument("--editor", help="editor label (default: the trace's editor)")
    judge.add_argument("--cache", type=Path, help="cache folder (default: <out folder>/.judge_cache)")
    judge.add_argument(
        "--concurrency", type=int, default=None, help="batches in flight (default 4 over HTTP, else 1)"
    )
    judge.add_argument(
        "--timeout", type=float, help="seconds to wait for one answer of an HTTP judge (default 120)"
    )
    judge.add_argument("--batch-size", type=int, default=8)
    judge.add_argument("--retries", type=int, default=2)
    judge.add_argument("--max-new-tokens", type=int, default=512)
    judge.add_argument("--temperature", type=float, default=0.0)
    judge.add_argument("--limit", type=int, help="judge only the first N items")
    judge.add_argument("--device", help="transformers backend device (default: cuda if available)")
    judge.add_argument("--no-progress", action="store_true")

    ref = sub.add_parser("reference", help="reference metrics of a run folder against a records folder")
    ref.add_argument("--run", required=True, type=Path)
    ref.add_argument("--records", required=True, type=Path, help="data_prep records folder (records.jsonl)")
    ref.add_argument("--out", required=True, type=Path)
    ref.add_argument("--method")
    ref.add_argument("--editor")
    ref.add_argument(
        "--threshold", type=float, default=8.0, help="pixel difference that marks the edited region"
    )

    report = sub.add_parser("report", help="Markdown + CSV + PNG report from score files")
    report.add_argument(
        "--scores", required=True, nargs="+", type=Path, help="score files or folders of *.jsonl"
    )
    report.add_argument("--out", required=True, type=Path, help="report folder")
    report.add_argument(
        "--human", type=Path, help="CSV of human scores: id,annotator,fulfillment,quality,preservation"
    )
    report.add_argument(
        "--human-filter",
        type=_key_value,
        action="append",
        default=[],
        help="pick the VLM scores compared with humans, e.g. evaluator=GPT-4o (repeatable)",
    )
    report.add_argument(
        "--metrics", type=_labelled_path, action="append", default=[], help="[LABEL=]metrics.jsonl"
    )
    report.add_argument(
        "--reference", type=Path, action="append", default=[], help="reference metric rows (JSONL)"
    )
    report.add_argument(
        "--ablation",
        type=_key_value,
        action="append",
        default=[],
        help='NAME=method,method,... (globs allowed); replaces the default ablations, e.g. "Goal reward=original,imageedit_r1,no_goal"',
    )
    report.add_argument("--ablation-editor")
    report.add_argument("--ablation-evaluator")
    report.add_argument(
        "--benchmarks", type=_csv_list, default=[], help="column order, e.g. PSR,RealEdit,UltraEdit"
    )
    report.add_argument(
        "--evaluators", type=_csv_list, default=[], help="column order, e.g. GPT-4o,Gemini-2.5-Flash"
    )
    report.add_argument(
        "--methods",
        type=_csv_list,
        help="Table 1 rows (labels or globs; default original,wo_rl,imageedit_r1)",
    )
    report.add_argument("--title", default="ImageEdit-R1 evaluation report")

    curves = sub.add_parser("curves", help="plot training reward curves from a metrics log")
    curves.add_argument("--metrics", required=True, type=Path, help="metrics.jsonl (or a run folder)")
    curves.add_argument("--out", required=True, type=Path, help="PNG to write")
    curves.add_argument("--title")
    curves.add_argument("--smooth", type=int, default=1)
    curves.add_argument(
        "--health",
        action="store_true",
        help="draw the learning-health signals (zero-variance groups, entropy, KL, rollout vs actor, length)",
    )
    add_outcome_flags(judge)  # the one subcommand that can lose items
    for command in (ref, report, curves):
        add_outcome_flags(command, losses=False)
    return parser


def make_scorer(args: argparse.Namespace):
    """The rubric judge or the principle verifier the `judge` flags describe (also the app's)."""
    from eval.judge import RubricJudge
    from eval.verifier import PrincipleVerifier
    from inference.chat_backends import make_backend

    kwargs: dict = {}
    if args.backend in ("openai", "gemini"):
        if args.base_url:
            kwargs["base_url"] = args.base_url
        if args.api_key_env is not None:
            kwargs["api_key_env"] = args.api_key_env or None
        if getattr(args, "timeout", None) is not None:
            kwargs["timeout_s"] = args.timeout
    elif args.backend == "transformers" and args.device:
        kwargs["device"] = args.device
    backend = make_backend(args.backend, args.model, **kwargs)
    sampling = Sampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens, n=1, seed=0)
    cls = PrincipleVerifier if args.scorer == "verifier" else RubricJudge
    return cls(backend, sampling=sampling, retries=args.retries)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.debug)
    return _run(args)


def cli(argv: Sequence[str] | None = None) -> int:
    """`python -m eval`: `main`, with an error as one line and exit 2 (`--debug`: the traceback)."""
    return run_cli("eval", main, argv, subcommands=True)


def _run(args: argparse.Namespace) -> int:
    """One subcommand; returns the exit code (judging loses items: `inference.outcome.verdict`)."""
    if args.command == "judge":
        from eval.batch import judge_run, summarize
        from inference.journal import journaled

        concurrency = args.concurrency or (4 if args.backend in ("openai", "gemini") else 1)
        scorer = make_scorer(args)
        # every answer is journaled the moment it arrives (a killed judge re-asks nothing it was told)
        scorer.backend = journaled(scorer.backend, args.cache or args.out.parent / ".judge_cache")
        rows = judge_run(
            args.run,
            scorer,
            args.out,
            benchmark=args.benchmark,
            evaluator=args.evaluator,
            method=args.method,
            editor=args.editor,
            cache_dir=args.cache,
            concurrency=concurrency,
            batch_size=args.batch_size,
            limit=args.limit,
            progress=not args.no_progress,
        )
        summary = summarize(rows)
        print(json.dumps({"scores": str(args.out), **summary}))
        reasons: dict[str, int] = {}
        for row in rows:
            if row["error"] is not None:
                reason = str(row["error"]).split(":", 1)[0][:60]
                reasons[reason] = reasons.get(reason, 0) + 1
        return verdict("eval judge", summary["items"], summary["judged"], reasons, args.max_loss)
    elif args.command == "reference":
        from eval.reference import score_run_against_references, summarize_reference_rows

        rows = score_run_against_references(
            args.run, args.records, args.out, method=args.method, editor=args.editor, threshold=args.threshold
        )
        for summary in summarize_reference_rows(rows):
            print(json.dumps(summary))
    elif args.command == "report":
        from eval.report import build_report

        path = build_report(
            args.scores,
            args.out,
            human_csv=args.human,
            human_filter=dict(args.human_filter),
            metrics_logs=args.metrics,
            reference_paths=args.reference,
            ablations={name: _csv_list(methods) for name, methods in args.ablation} or None,
            ablation_editor=args.ablation_editor,
            ablation_evaluator=args.ablation_evaluator,
            benchmarks=args.benchmarks,
            evaluators=args.evaluators,
            table1_methods=args.methods,
            title=args.title,
        )
        print(path)
    elif args.command == "curves":
        from eval.curves import plot_health_curves, plot_reward_curves

        plot = plot_health_curves if args.health else plot_reward_curves
        print(plot(args.metrics, args.out, title=args.title, smooth=args.smooth))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
