"""Command line of the editing pipeline: one image, or a whole data_prep eval set, in one or more modes.

    # one image
    python -m inference --image cat.png --request "make the cat orange and blur the background" \\
        --out outputs/runs/demo --mode single --editor flux_kontext --llm-model CKPT_DIR
    # a data_prep eval set (records.jsonl + images/), resumable; outputs in OUT/<mode>/
    python -m inference --records outputs/data/synthetic/eval --out outputs/pipeline/flux \\
        --mode original --mode single --mode multi --backend vllm --llm-model CKPT_DIR

Editor defaults come from inference/config/editors.yaml; override any with --editor-opt KEY=VALUE
(e.g. --editor-opt num_inference_steps=8). Backend keywords go in --llm-opt KEY=VALUE.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from inference.outcome import add_outcome_flags, run_cli, setup_logging, verdict
from inference.pipeline import MAX_IMAGE_PIXELS, MODES, EditingPipeline
from inference.records import Record, read_records

DEFAULT_LLM = "Qwen/Qwen2.5-VL-7B-Instruct"
#: The agents' answer journal in the run folder (`--out`), shared by the modes.
JOURNAL_FILE = ".answers.jsonl"


def _key_values(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value) if value else ""
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m inference", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="one input image")
    src.add_argument("--records", type=Path, help="a data_prep eval set folder (records.jsonl + images/)")
    p.add_argument("--request", help="the edit request (with --image)")
    p.add_argument("--id", help="item id for --image (default: the file's stem)")
    p.add_argument("--out", type=Path, required=True, help="run folder; outputs go to OUT/<mode>/")
    p.add_argument("--mode", choices=MODES, action="append", help="repeatable; default: single")
    p.add_argument(
        "--editor", default="flux_kontext", help="flux_kontext, qwen_image_edit, openai_images, gemini, tool"
    )
    p.add_argument("--editor-model", help="editor model (folder or hub id); default from the editor config")
    p.add_argument("--editor-opt", action="append", metavar="KEY=VALUE", help="editor setting override")
    p.add_argument("--backend", default="transformers", help="transformers, vllm, openai, gemini")
    p.add_argument("--llm-model", default=DEFAULT_LLM, help="decomposition/sequencing VLM (folder or id)")
    p.add_argument("--llm-opt", action="append", metavar="KEY=VALUE", help="backend constructor keyword")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for one answer of an HTTP backend (openai, gemini; default 120)",
    )
    p.add_argument("--decomposer", choices=("model", "ground_truth"), default="model")
    p.add_argument("--sequencer", choices=("vlm", "template", "ground_truth"), default="vlm")
    p.add_argument("--temperature", type=float, default=0.0, help="agents' sampling temperature (0: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--max-attempts", type=int, default=3, help="tries per item for a parseable answer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8, help="items per agent batch")
    p.add_argument("--edit-workers", type=int, default=1, help="concurrent editor calls (hosted editors)")
    p.add_argument("--limit", type=int, help="only the first N records")
    p.add_argument("--retry-errors", action="store_true", help="redo items whose trace has an error")
    p.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS)
    p.add_argument("--no-progress", action="store_true")
    add_outcome_flags(p)
    return p


def build_pipeline(
    args: argparse.Namespace, modes: list[str], journal_dir: Path | None = None
) -> EditingPipeline:
    """Load only what the modes need: the editor always, the VLM only for model agents. With
    `journal_dir`, every agent answer is journaled there as it arrives (`inference.journal`), so a
    killed run asks for none of them again."""
    from inference.agents import DecompositionAgent, TemplateSequencer, VLMSequencer
    from inference.chat import Sampling
    from inference.editors import make_editor
    from inference.pipeline import OracleDecomposer, OracleSequencer

    editor_kwargs = _key_values(args.editor_opt, "--editor-opt")
    if args.editor_model:
        editor_kwargs["model"] = args.editor_model
    editor = make_editor(args.editor, **editor_kwargs)
    decomposer = sequencer = None
    if any(m != "original" for m in modes):
        backend = None
        if args.decomposer == "model" or args.sequencer == "vlm":
            from inference.chat_backends import make_backend
            from inference.journal import journaled

            llm_kwargs = _key_values(args.llm_opt, "--llm-opt")
            timeout = getattr(args, "timeout", None)  # the app's flags have none
            if timeout is not None:
                if args.backend not in ("openai", "gemini"):
                    raise SystemExit(
                        f"--timeout is for the HTTP backends (openai, gemini), not {args.backend}"
                    )
                llm_kwargs["timeout_s"] = timeout
            backend = make_backend(args.backend, args.llm_model, **llm_kwargs)
            if journal_dir is not None:
                backend = journaled(backend, journal_dir, JOURNAL_FILE)
        sampling = Sampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
        agent_kw = dict(sampling=sampling, max_attempts=args.max_attempts)
        decomposer = (
            DecompositionAgent(backend, **agent_kw) if args.decomposer == "model" else OracleDecomposer()
        )
        sequencer = {
            "vlm": lambda: VLMSequencer(backend, **agent_kw),
            "template": TemplateSequencer,
            "ground_truth": OracleSequencer,
        }[args.sequencer]()
    return EditingPipeline(
        editor,
        decomposer,
        sequencer,
        seed=args.seed,
        batch_size=args.batch_size,
        max_image_pixels=args.max_image_pixels,
        edit_workers=args.edit_workers,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return _run(args)


def cli(argv: list[str] | None = None) -> int:
    """`python -m inference`: `main`, with an error as one line and exit 2 (`--debug`: the traceback)."""
    return run_cli("python -m inference", main, argv)


def _run(args: argparse.Namespace) -> int:
    """The pipeline over the items in every mode; exit 1 when a mode loses more than --max-loss."""
    modes = list(dict.fromkeys(args.mode or ["single"]))
    if args.image is not None:
        if not args.request:
            raise SystemExit("--image needs --request")
        items = [Record(args.id or args.image.stem, "cli", args.request, args.image)]
    else:
        items = list(read_records(args.records))
        if args.limit is not None:
            items = items[: args.limit]
    pipeline = build_pipeline(args, modes, journal_dir=args.out)
    failed = 0
    code = 0
    for mode in modes:
        s = pipeline.run(items, args.out, mode, retry_errors=args.retry_errors, progress=not args.no_progress)
        failed += s.failed
        if s.skipped_failed:
            print(
                f"inference {mode}: skipped {s.skipped_failed} item(s) that failed in an earlier run"
                f" (errors in their traces in {s.run_dir}); rerun with --retry-errors to try them again",
                file=sys.stderr,
            )
        if s.done and args.image is None:
            reasons = _error_reasons(s.run_dir, s.failed)
            code = max(code, verdict(f"inference {mode}", s.done, s.done - s.failed, reasons, args.max_loss))
        elif not s.usable and (s.skipped or s.invalid):
            print(
                f"inference {mode}: FAILED: nothing usable: none of the {s.skipped + s.invalid} items has an"
                " output without an error",
                file=sys.stderr,
            )
            code = max(code, 1)
        print(
            json.dumps(
                {
                    "mode": mode,
                    "run_dir": str(s.run_dir),
                    "done": s.done,
                    "failed": s.failed,
                    "skipped": s.skipped,
                    "skipped_failed": s.skipped_failed,
                    "duplicates": s.duplicates,
                    "invalid_ids": s.invalid,
                    "seconds": round(s.seconds, 3),
                }
            ),
            flush=True,
        )
    if args.image is not None and failed:
        from inference.pipeline import file_stem

        for mode in modes:
            trace = json.loads((args.out / mode / f"{file_stem(items[0].id)}.json").read_text())
            if trace["error"]:
                print(f"{mode}: {trace['error']}", file=sys.stderr)
        return 1
    return code


def _error_reasons(run_dir: Path, failed: int) -> dict[str, int]:
    """Error kinds (the text before the first colon) of a run folder's failed traces."""
    from inference.pipeline import read_traces

    reasons: dict[str, int] = {}
    if failed:
        for trace in read_traces(run_dir):
            if trace.get("error"):
                reason = str(trace["error"]).split(":", 1)[0][:60]
                reasons[reason] = reasons.get(reason, 0) + 1
    return reasons
