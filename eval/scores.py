"""Judge score files: JSONL, one judged item per line (the cross-team contract).

``{"id", "benchmark", "editor", "method", "evaluator", "fulfillment", "quality", "preservation",
"total", "error"}``; a failed judgement has `error` set and null scores, never zeros. Extra keys
(reasoning, principle verdicts, ...) are allowed and kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eval.parsing import CRITERIA, RUBRIC
from inference.fileio import read_jsonl_lines, write_jsonl

SCORE_FIELDS: tuple[str, ...] = (
    "id",
    "benchmark",
    "editor",
    "method",
    "evaluator",
    "fulfillment",
    "quality",
    "preservation",
    "total",
    "error",
)
LABEL_FIELDS: tuple[str, ...] = ("id", "benchmark", "editor", "method", "evaluator")
VALUE_RANGES: dict[str, float] = {**RUBRIC, "total": sum(RUBRIC.values())}


def failed_fields(error: str) -> dict[str, Any]:
    """Score fields of a failed judgement: null scores and the error (never zeros)."""
    return dict.fromkeys(VALUE_RANGES) | {"error": error}


def validate_score(row: Mapping[str, Any], where: str = "score") -> dict[str, Any]:
    """The row as a dict if it follows the contract; else ValueError naming the field and `where`."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [f for f in SCORE_FIELDS if f not in row]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    for f in LABEL_FIELDS:
        if not isinstance(row[f], str) or not row[f]:
            raise ValueError(f"{where}: field {f!r} must be a non-empty string, got {row[f]!r}")
    error = row["error"]
    values = {f: row[f] for f in VALUE_RANGES}
    if error is not None:
        if not isinstance(error, str) or not error:
            raise ValueError(f"{where}: 'error' must be null or a non-empty string, got {error!r}")
        if any(v is not None for v in values.values()):
            raise ValueError(
                f"{where}: a failed judgement ({error[:80]!r}) must have null scores, got {values}"
            )
        return dict(row)
    for f, top in VALUE_RANGES.items():
        v = values[f]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{where}: {f!r} must be a number when 'error' is null, got {v!r}")
        if not 0 <= v <= top:
            raise ValueError(f"{where}: {f!r}={v} outside 0-{top}")
    if not math.isclose(sum(values[c] for c in CRITERIA), values["total"], abs_tol=1e-6):
        raise ValueError(f"{where}: 'total' {values['total']} is not the sum of the criteria {values}")
    return dict(row)


def read_scores(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """All rows of one or more score files (or folders of `*.jsonl`), validated."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.jsonl")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"score file not found: {p}")
    return [validate_score(obj, where=f"{f}:{number}") for f in files for number, obj in read_jsonl_lines(f)]


def duplicate_keys(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], int]:
    """(id, benchmark, method, editor, evaluator) keys held by more than one row, with their counts:
    the same item scored twice (score files overlapping, or a rerun written to a second file)."""
    counts: dict[tuple[str, ...], int] = {}
    for row in rows:
        key = tuple(row[f] for f in ("id", "benchmark", "method", "editor", "evaluator"))
        counts[key] = counts.get(key, 0) + 1
    return {k: n for k, n in counts.items() if n > 1}


def write_scores(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Validate and write score rows as JSONL, atomically (nothing is written when a row is invalid)."""
    valid = [validate_score(r, where=f"row {i}") for i, r in enumerate(rows, start=1)]
    write_jsonl(path, valid)
    return Path(path)
