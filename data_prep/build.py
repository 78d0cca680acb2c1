"""Benchmarks -> eval sets (records folders), teacher annotation, ground truth, verl/EasyR1 RL data.

    # eval set the way the paper sampled it (PSR-328: all 328; RealEdit test / UltraEdit: 1,000, seed 0)
    python -m data_prep.build eval --preset realedit-csv --input /data/realedit/test.csv \
        --image-dir /data/realedit/images --out outputs/data/realedit
    python -m data_prep.build eval --preset ultraedit --input /data/UltraEdit --out outputs/data/ultraedit \
        --columns instruction=edit_prompt --workers 2
    # ground truth: import a JSONL, or annotate with a teacher VLM over an OpenAI-compatible endpoint
    python -m data_prep.build attach --records outputs/data/realedit --ground-truth gt.jsonl
    python -m data_prep.build annotate --records outputs/data/realedit --model gpt-4o --out gt.jsonl
    # RL data (verl + SFT + EasyR1 parquet) from records that carry a decomposition
    python -m data_prep.build rl --records outputs/data/realedit --out outputs/data/realedit_rl

Every run streams rows in shards (`parts/` under the output), writes each shard atomically and
skips shards already done on a rerun (resume), and writes `report.json` (seen, kept, skipped by
reason, normalisations). One bad row never stops a run; a run that keeps nothing or loses more
than --max-loss exits 1, an error exits 2 with one line (--debug: the traceback).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from data_prep.readers import PRESETS, ColumnMap, open_source
from data_prep.report import Report
from inference.fileio import (
    DEFAULT_MAX_PIXELS,
    BadImage,
    atomic_open,
    load_image,
    read_jsonl,
    remove_stale_temps,
    save_png,
    write_json,
)
from inference.outcome import add_outcome_flags, run_cli, setup_logging, verdict
from inference.protocol import Decomposition
from inference.records import IMAGES_DIR, Record, read_records, write_records

PARTS_DIR = "parts"
REPORT_FILE = "report.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class RowJob:
    """Everything a worker needs to normalise one row (picklable)."""

    index: int
    row: dict[str, Any]
    columns: ColumnMap
    source: str
    base_dir: str
    out_dir: str
    max_pixels: int
    max_side: int | None


@dataclass(frozen=True)
class RowResult:
    index: int
    record: dict[str, Any] | None  # records.jsonl object (paths relative to out_dir)
    notes: tuple[str, ...] = ()
    skip_reason: str | None = None
    detail: str = ""
    row_id: str = ""


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text)[:80].strip("_") or "row"


def normalise_row(job: RowJob) -> RowResult:
    """One source row -> one record (input image saved as PNG), or the reason it was skipped.
    Never raises: an unexpected failure is a skipped row with reason `row_error`."""
    try:
        return _normalise_row(job)
    except Exception as exc:  # noqa: BLE001 - one bad row never stops a run
        return RowResult(job.index, None, skip_reason="row_error", detail=f"{type(exc).__name__}: {exc}")


def _normalise_row(job: RowJob) -> RowResult:
    row, cols = job.row, job.columns
    row_id = (
        str(row.get(cols.id))
        if cols.id and row.get(cols.id) not in (None, "")
        else f"{job.source}-{job.index:07d}"
    )
    if "__error__" in row:
        return RowResult(
            job.index, None, skip_reason="unreadable_row", detail=row["__error__"], row_id=row_id
        )
    instruction = row.get(cols.instruction)
    if not isinstance(instruction, str) or not instruction.strip():
        return RowResult(
            job.index, None, skip_reason="empty_instruction", detail=repr(instruction)[:100], row_id=row_id
        )
    out = Path(job.out_dir)
    stem = f"{job.index:08d}-{safe_name(row_id)}"
    notes: list[str] = []
    try:
        image, image_notes = load_image(row.get(cols.image), job.base_dir, job.max_pixels, job.max_side)
    except BadImage as exc:
        return RowResult(job.index, None, skip_reason=exc.reason, detail=str(exc), row_id=row_id)
    notes += image_notes
    image_rel = f"{IMAGES_DIR}/{stem}.png"
    save_png(image, out / image_rel)
    references: list[str] = []
    for column in cols.references:
        values = row.get(column)
        if isinstance(values, str) and cols.reference_separator:
            values = [v for v in values.split(cols.reference_separator) if v.strip()]
        elif not isinstance(values, list):
            values = [values] if values not in (None, "") else []
        for value in values:
            try:
                ref, _ = load_image(value, job.base_dir, job.max_pixels, job.max_side)
            except BadImage as exc:
                notes.append(f"reference_dropped_{exc.reason}")
                continue
            rel = f"{IMAGES_DIR}/{stem}.ref{len(references)}.png"
            save_png(ref, out / rel)
            references.append(rel)
    decomposition = None
    if cols.decomposition and row.get(cols.decomposition) not in (None, ""):
        try:
            decomposition = Decomposition.from_ground_truth(row[cols.decomposition]).to_ground_truth()
        except ValueError:
            notes.append("invalid_decomposition_dropped")
    record = {
        "id": row_id,
        "source": job.source,
        "instruction": " ".join(instruction.split()),
        "image": image_rel,
        "references": references,
        "decomposition": decomposition,
        "plan": None,
    }
    return RowResult(job.index, record, tuple(notes), row_id=row_id)


def sample_ranks(n_rows: int, k: int | None, seed: int) -> dict[int, int] | None:
    """Row index -> rank for a seeded sample of k rows plus a few spares (replacing bad rows).
    None means every row, in file order."""
    if k is None or k >= n_rows:
        return None
    spare = max(10, k // 20)
    order = list(range(n_rows))
    random.Random(seed).shuffle(order)
    return {index: rank for rank, index in enumerate(order[: min(n_rows, k + spare)])}


def _shards(
    rows: Iterator[tuple[int, dict]], ranks: dict[int, int] | None, shard_rows: int
) -> Iterator[list[tuple[int, dict]]]:
    shard: list[tuple[int, dict]] = []
    for index, row in rows:
        if ranks is not None and index not in ranks:
            continue
        shard.append((index, row))
        if len(shard) >= shard_rows:
            yield shard
            shard = []
    if shard:
        yield shard


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when its parent dies, whatever killed the parent
    (SIGKILL included, where no cleanup code of the parent runs). Linux: the kernel sends SIGKILL
    (`prctl(PR_SET_PDEATHSIG)`); elsewhere a daemon thread polls the parent pid once a second."""
    import signal

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    except (OSError, AttributeError):  # not Linux: watch the parent instead
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="die-with-parent").start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


def build_eval_set(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    preset: str | None = None,
    columns: ColumnMap | None = None,
    source: str | None = None,
    split: str | None = None,
    image_dir: str | os.PathLike | None = None,
    sample: int | None | str = "preset",
    seed: int = 0,
    shard_rows: int = 256,
    workers: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    ground_truth: str | os.PathLike | None = None,
    progress: bool = True,
) -> Report:
    """Normalise a local benchmark copy into a records folder; returns (and writes) the report."""
    spec = PRESETS[preset] if preset else None
    if columns is None:
        if spec is None:
            raise ValueError("give a --preset or a full column mapping")
        columns = spec.columns
    source = source or (spec.source if spec else Path(input_path).stem)
    if split is None and spec is not None and spec.eval_split and Path(input_path).is_dir():
        split = spec.eval_split
    if sample == "preset":
        sample = spec.eval_sample if spec else None
    table = open_source(input_path, split=split, image_dir=image_dir)
    table.check_columns(columns.required())
    table.select(columns)  # the map's row filter and per-id grouping
    out = Path(out_dir)
    remove_stale_temps(out)  # half-written files of a killed run (outputs are atomic: never half)
    parts = out / PARTS_DIR
    parts.mkdir(parents=True, exist_ok=True)
    ranks = sample_ranks(len(table), sample, seed)
    settings = {
        "input": str(Path(input_path).resolve()),
        "columns": columns.__dict__,
        "source": source,
        "split": split,
        "sample": sample,
        "seed": seed,
        "shard_rows": shard_rows,
        "max_pixels": max_pixels,
        "max_side": max_side,
    }
    settings_path = parts / "settings.json"
    if settings_path.exists() and json.loads(settings_path.read_text()) != json.loads(json.dumps(settings)):
        raise ValueError(f"{out} holds a run with other settings ({settings_path}); use a fresh --out")
    write_json(settings_path, settings)

    # workers end with this process, however it ends (no orphans after a SIGKILL)
    pool = (
        ProcessPoolExecutor(workers, initializer=die_with_parent, initargs=(os.getpid(),))
        if workers > 0
        else None
    )
    total = len(ranks) if ranks is not None else len(table)
    bar = tqdm(total=total, desc=f"{source} rows", disable=not progress, mininterval=1)
    try:
        rows = table.iter_rows(
            columns=None if table.kind in ("csv", "jsonl", "json") else columns.required(),
            only=None if ranks is None else set(ranks),
        )
        for number, shard in enumerate(_shards(rows, ranks, shard_rows)):
            part = parts / f"shard-{number:05d}.jsonl"
            part_report = parts / f"shard-{number:05d}.report.json"
            if part.exists() and part_report.exists():  # resume: done in an earlier run
                bar.update(len(shard))
                continue
            jobs = [
                RowJob(i, row, columns, source, str(table.base_dir), str(out), max_pixels, max_side)
                for i, row in shard
            ]
            results = pool.map(normalise_row, jobs, chunksize=4) if pool else map(normalise_row, jobs)
            report = Report()
            with atomic_open(part) as fh:
                for result in results:
                    report.seen += 1
                    for note in result.notes:
                        report.note(note)
                    if result.record is None:
                        report.skip(result.row_id, result.skip_reason or "unknown", result.detail)
                    else:
                        report.kept += 1
                        rank = ranks[result.index] if ranks is not None else result.index
                        fh.write(
                            json.dumps({"rank": rank, "record": result.record}, ensure_ascii=False) + "\n"
                        )
                    bar.update(1)
            report.write(part_report)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return _assemble(out, sample if ranks is not None else None, ground_truth)


def _part_lines(parts: Path) -> Iterator[dict]:
    for part in sorted(parts.glob("shard-*.jsonl")):
        yield from read_jsonl(part)


def _assemble(out: Path, k: int | None, ground_truth: str | os.PathLike | None) -> Report:
    """records.jsonl from the shard parts (the k best-ranked good rows when sampling) + report.json."""
    parts = out / PARTS_DIR
    report = Report()
    for path in sorted(parts.glob("shard-*.report.json")):
        report.merge(Report.from_json(json.loads(path.read_text())))
    truth: dict[str, Decomposition] = {}
    if ground_truth is not None:
        from data_prep.groundtruth import read_ground_truth

        gt_report = Report()
        truth = read_ground_truth(ground_truth, gt_report)
        for reason, n in gt_report.skipped.items():
            report.note(f"ground_truth_{reason}", n)

    lines: Any = _part_lines(parts)
    if k is not None:
        chosen = sorted(_part_lines(parts), key=lambda obj: obj["rank"])
        lines = chosen
    seen_ids: set[str] = set()

    def records() -> Iterator[Record]:
        taken = 0
        for obj in lines:
            rec = obj["record"]
            if rec["id"] in seen_ids:
                report.kept -= 1
                report.skip(rec["id"], "duplicate_id", f"id {rec['id']!r} seen before")
                _remove_images(out, rec)
                continue
            if k is not None and taken >= k:
                report.kept -= 1
                report.note("spare_candidate_unused")
                _remove_images(out, rec)
                continue
            seen_ids.add(rec["id"])
            taken += 1
            record = Record.from_json(rec, out)
            gt = truth.get(record.id)
            if gt is not None:
                record = replace(record, decomposition=gt)
                report.note("ground_truth_attached")
            yield record

    write_records(out, records())
    report.write(out / REPORT_FILE)
    return report


def _remove_images(out: Path, rec: dict) -> None:
    for rel in [rec["image"], *rec["references"]]:
        (out / rel).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# RL data from records


def is_val(record_id: str, seed: int, fraction: float) -> bool:
    """Deterministic split by id hash (stable under resharding and reordering)."""
    digest = hashlib.sha256(f"{seed}/{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def build_rl_data(
    records_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.05,
    seed: int = 0,
    max_side: int | None = None,
    shard_rows: int | None = None,
    progress: bool = True,
    max_pixels: int | None = None,
) -> Report:
    """verl RL + SFT + EasyR1 parquet (train/val) from the records that carry a decomposition.
    `max_pixels`: the recipe's image budget (data_prep/budget.py); images are resized to fit it. None
    or 0 keeps the sizes, and rows whose image exceeds the paper recipe's budget are counted as
    `over_image_budget` in the report."""
    from data_prep import budget
    from data_prep.writers import TrainingExample, write_training_sets
    from inference.fileio import png_bytes

    remove_stale_temps(out_dir)
    report = Report()
    budget_tokens = (max_pixels or budget.PAPER_MAX_PIXELS) // (budget.PATCH_SIZE * budget.MERGE_SIZE) ** 2

    def examples(split: str) -> Iterator[TrainingExample]:
        for record in tqdm(
            read_records(records_dir), desc=f"rl {split}", disable=not progress, mininterval=1
        ):
            if is_val(record.id, seed, val_fraction) != (split == "val"):
                continue
            report.seen += 1
            if record.decomposition is None:
                report.skip(record.id, "no_ground_truth", "record has no decomposition")
                continue
            try:
                image, notes = load_image(record.image, max_side=max_side)
            except BadImage as exc:
                report.skip(record.id, exc.reason, str(exc))
                continue
            for note in notes:
                report.note(note)
            if max_pixels:
                image = budget.fit_image(image, max_pixels)
            # the tokens the image takes as stored (not capped by the processor's bound), against the
            # budget: only an image kept at its size (max_pixels 0/None) can exceed the paper's
            if budget.image_tokens(image.height, image.width) > budget_tokens:
                report.note("over_image_budget")
            report.kept += 1
            yield TrainingExample(
                record.id,
                record.source,
                record.instruction,
                png_bytes(image),
                record.decomposition,
                record.plan,
            )

    counts = write_training_sets(out_dir, examples("train"), "train", shard_rows=shard_rows)
    counts |= write_training_sets(out_dir, examples("val"), "val", shard_rows=shard_rows)
    write_json(Path(out_dir) / "manifest.json", {"records": str(records_dir), "files": counts, "seed": seed})
    report.write(Path(out_dir) / REPORT_FILE)
    return report


# ---------------------------------------------------------------------------------------------
# CLI


def _column_overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--columns wants key=value, got {pair!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", help="local benchmark copy -> records folder (sampled as the paper did)")
    ev.add_argument("--input", required=True, help="datasets folder, parquet file/folder, csv or jsonl")
    ev.add_argument("--out", required=True)
    ev.add_argument("--preset", choices=sorted(PRESETS))
    ev.add_argument(
        "--columns", nargs="*", default=[], help="overrides, e.g. instruction=prompt references=a,b"
    )
    ev.add_argument("--source", help="source name written in each record (default: the preset's)")
    ev.add_argument("--split")
    ev.add_argument("--image-dir", help="folder for relative image paths (default: the input's folder)")
    ev.add_argument("--sample", type=int, help="rows to sample (default: the preset's; -1: all)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--shard-rows", type=int, default=256)
    ev.add_argument("--workers", type=int, default=0, help="worker processes for decoding (0: in process)")
    ev.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS)
    ev.add_argument("--max-side", type=int, help="downscale larger images to this side")
    ev.add_argument("--ground-truth", help="JSONL of decompositions to attach by id")
    ev.add_argument("--no-progress", action="store_true")

    at = sub.add_parser("attach", help="attach ground-truth decompositions (JSONL) to a records folder")
    at.add_argument("--records", required=True)
    at.add_argument("--ground-truth", required=True)

    an = sub.add_parser("annotate", help="annotate a records folder with a teacher VLM")
    an.add_argument("--records", required=True)
    an.add_argument("--out", required=True, help="ground-truth JSONL to write")
    an.add_argument(
        "--backend", default="openai", help="inference.chat_backends.make_backend kind (openai, gemini, ...)"
    )
    an.add_argument("--model", required=True)
    an.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    an.add_argument(
        "--api-key-env",
        default=None,
        help="environment variable holding the key (default: the backend's, OPENAI_API_KEY or GEMINI_API_KEY; '' for none)",
    )
    an.add_argument("--cache", default="outputs/cache/teacher")
    an.add_argument("--concurrency", type=int, default=4)
    an.add_argument("--retries", type=int, default=2, help="retries of invalid answers")
    an.add_argument(
        "--timeout", type=float, help="seconds to wait for one answer of an HTTP teacher (default 120)"
    )
    an.add_argument("--no-progress", action="store_true")

    rl = sub.add_parser("rl", help="records with decompositions -> verl RL/SFT + EasyR1 parquet")
    rl.add_argument("--records", required=True)
    rl.add_argument("--out", required=True)
    rl.add_argument("--val-fraction", type=float, default=0.05)
    rl.add_argument("--seed", type=int, default=0)
    rl.add_argument("--max-side", type=int, default=None, help="downscale larger images to this side")
    rl.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="resize images to the recipe's image budget (default: the paper recipe's image_budget.max_pixels, "
        "so prompts fit max_prompt_length 2048; 0 keeps the sizes; see data_prep/budget.py)",
    )
    rl.add_argument("--shard-rows", type=int, default=None, help="rows per parquet shard (default: one file)")
    rl.add_argument("--no-progress", action="store_true")

    for command in (ev, at, an, rl):
        add_outcome_flags(command)
    args = parser.parse_args(argv)
    setup_logging(args.debug, level=logging.WARNING)
    return _run(args)


def cli(argv: list[str] | None = None) -> int:
    """`python -m data_prep.build`: `main`, with an error as one line and exit 2 (`--debug`: traceback)."""
    return run_cli("data_prep", main, argv, subcommands=True)


def _run(args: argparse.Namespace) -> int:
    """One subcommand; returns the exit code (`inference.outcome.verdict` of its report)."""
    if args.command == "eval":
        columns = None
        if args.preset or args.columns:
            base = PRESETS[args.preset].columns if args.preset else ColumnMap(instruction="", image="")
            columns = base.with_overrides(_column_overrides(args.columns))
        report = build_eval_set(
            args.input,
            args.out,
            preset=args.preset,
            columns=columns,
            source=args.source,
            split=args.split,
            image_dir=args.image_dir,
            sample="preset" if args.sample is None else (None if args.sample < 0 else args.sample),
            seed=args.seed,
            shard_rows=args.shard_rows,
            workers=args.workers,
            max_pixels=args.max_pixels,
            max_side=args.max_side,
            ground_truth=args.ground_truth,
            progress=not args.no_progress,
        )
    elif args.command == "attach":
        from data_prep.groundtruth import attach_ground_truth, read_ground_truth

        report = Report()
        truth = read_ground_truth(args.ground_truth, report)
        records = list(read_records(args.records))  # rewritten in place: read fully first
        write_records(args.records, attach_ground_truth(records, truth, report))
    elif args.command == "annotate":
        from data_prep.groundtruth import TeacherAnnotator, write_annotations
        from inference.chat_backends import make_backend

        kwargs: dict[str, Any] = {}
        if args.api_key_env is not None:  # '' : no key (a local server); unset: the backend's default
            kwargs["api_key_env"] = args.api_key_env or None
        if args.base_url:
            kwargs["base_url"] = args.base_url
        if args.timeout is not None:
            kwargs["timeout_s"] = args.timeout
        backend = make_backend(args.backend, args.model, **kwargs)
        annotator = TeacherAnnotator(backend, args.cache, args.concurrency, invalid_retries=args.retries)
        report = Report()
        total = sum(1 for _ in read_records(args.records))
        annotations = tqdm(
            annotator.annotate(read_records(args.records), report),
            total=total,
            desc="annotate",
            unit="record",
            disable=args.no_progress,
            mininterval=1,
        )
        write_annotations(args.out, annotations, args.model)
        report.write(Path(args.out).with_suffix(".report.json"))
    else:
        from data_prep.writers import verl_image_support_problem

        if problem := verl_image_support_problem():
            print(f"WARNING: {problem}", file=sys.stderr)
        report = build_rl_data(
            args.records,
            args.out,
            args.val_fraction,
            args.seed,
            args.max_side,
            shard_rows=args.shard_rows,
            progress=not args.no_progress,
            max_pixels=_rl_max_pixels(args.max_pixels),
        )
    print(report.summary(), file=sys.stderr)
    reasons = dict(report.skipped)
    seen, kept = report.kept + report.n_skipped, report.kept  # unused sampling spares are not losses
    if args.command == "attach" and not report.normalised["ground_truth_attached"]:
        kept = 0  # valid lines, but no record of the folder got one (ids do not match?)
        reasons = {"no_record_matched": report.kept, **reasons}
    return verdict(f"data_prep {args.command}", seen, kept, reasons, args.max_loss)


def _rl_max_pixels(given: int | None) -> int | None:
    """--max-pixels: None -> the paper recipe's budget, 0 -> keep the image sizes."""
    from data_prep.budget import PAPER_MAX_PIXELS

    return PAPER_MAX_PIXELS if given is None else (given or None)


if __name__ == "__main__":
    raise SystemExit(cli())
