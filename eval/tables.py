"""The paper's tables computed from score rows: Table 1 (editor x method by benchmark x evaluator),
ablation tables, and the human-agreement table.

Failed judgements (`error` set) are excluded from every mean and counted in the table's notes.
A cell is the mean total of its items; an Average is the mean of the row's cells, as in the paper
("the mean score across all three benchmarks and two evaluators"). Best per column is bold,
second-best underlined (compared at the printed precision, so ties share the mark).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eval.parsing import CRITERIA, RUBRIC

#: Table 1's method order; other labels follow in order of appearance.
METHOD_ORDER: tuple[str, ...] = ("original", "wo_rl", "imageedit_r1")
METHOD_NAMES: dict[str, str] = {
    "original": "Original",
    "wo_rl": "ImageEdit-R1 (w/o RL)",
    "imageedit_r1": "ImageEdit-R1",
    "single": "Single-turn",
    "multi": "Multi-turn",
    "no_goal": "w/o goal reward",
}
#: Default ablations (method labels; '*' globs): a table is made when two or more rows have scores.
DEFAULT_ABLATIONS: dict[str, tuple[str, ...]] = {
    "Single vs multi-turn": ("original", "single", "multi"),
    "Goal reward": ("original", "imageedit_r1", "no_goal"),
    "Decomposition model": ("original", "imageedit_r1", "decomp_*"),
}
BASELINE = "original"
DIGITS = 2


def method_name(label: str) -> str:
    return METHOD_NAMES.get(label, label)


def _fmt(value: float | None, digits: int = DIGITS) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def ordered_unique(values: Iterable[str], preferred: Sequence[str] = ()) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


@dataclass
class Table:
    """A rendered table: numeric `values` (None where empty) plus text columns, and the marks."""

    title: str
    header: list[str]
    rows: list[list[Any]]
    #: (row, column) -> "best" | "second"
    marks: dict[tuple[int, int], str] = field(default_factory=dict)
    #: (row, column) -> superscript text (the delta against Original)
    superscripts: dict[tuple[int, int], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    digits: int = DIGITS
    group_first_column: bool = False

    def cell_text(self, r: int, c: int) -> str:
        value = self.rows[r][c]
        text = _fmt(value, self.digits) if isinstance(value, (int, float)) or value is None else str(value)
        mark = self.marks.get((r, c))
        if mark == "best":
            text = f"**{text}**"
        elif mark == "second":
            text = f"<u>{text}</u>"
        if (r, c) in self.superscripts:
            text = f"{text} <sup>{self.superscripts[(r, c)]}</sup>"
        return text

    def to_markdown(self) -> str:
        """Markdown with the marks; a first-column value repeated from the row above is left blank
        (row groups, as in the paper's Table 1)."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |"]
        lines.append(
            "|"
            + "|".join("---" if i < self._text_columns() else "---:" for i in range(len(self.header)))
            + "|"
        )
        for r in range(len(self.rows)):
            cells = [self.cell_text(r, c) for c in range(len(self.header))]
            if self.group_first_column and r > 0 and self.rows[r][0] == self.rows[r - 1][0]:
                cells[0] = ""
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines) + "\n"

    def _text_columns(self) -> int:
        for c in range(len(self.header)):
            if any(isinstance(row[c], (int, float)) for row in self.rows):
                return c
        return len(self.header)

    def to_csv(self) -> str:
        """Plain values (rounded to 4 decimals; empty where no score) with the same header, plus
        the delta of the last column against Original where the table has one."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        delta = bool(self.superscripts)
        writer.writerow([*self.header, *(["Delta vs Original"] if delta else [])])
        for r, row in enumerate(self.rows):
            values = ["" if v is None else round(v, 4) if isinstance(v, float) else v for v in row]
            if delta:
                values.append(self.superscripts.get((r, len(row) - 1), ""))
            writer.writerow(values)
        return buf.getvalue()


def mark_best(table: Table, columns: Iterable[int], higher_is_better: bool = True) -> None:
    for c in columns:
        values = sorted(
            {round(row[c], table.digits) for row in table.rows if isinstance(row[c], (int, float))},
            reverse=higher_is_better,
        )
        for r, row in enumerate(table.rows):
            if not isinstance(row[c], (int, float)):
                continue
            rounded = round(row[c], table.digits)
            if values and rounded == values[0]:
                table.marks[(r, c)] = "best"
            elif len(values) > 1 and rounded == values[1]:
                table.marks[(r, c)] = "second"


def _ok(rows: Iterable[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], int]:
    rows = list(rows)
    ok = [r for r in rows if r.get("error") is None and r.get("total") is not None]
    return ok, len(rows) - len(ok)


def _failure_note(failed: int, total: int) -> list[str]:
    if not failed:
        return [f"{total} judged items; no failed judgements."]
    return [
        f"{failed} of {total} judgements failed (unreadable answer or backend error) and are excluded from the means."
    ]


def cell_means(
    rows: Iterable[Mapping[str, Any]], keys: Sequence[str]
) -> dict[tuple[str, ...], tuple[float, int]]:
    """Mean total and item count per combination of `keys`, over successful judgements."""
    groups: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for r in rows:
        if r.get("error") is None and r.get("total") is not None:
            groups[tuple(r[k] for k in keys)].append(float(r["total"]))
    return {k: (sum(v) / len(v), len(v)) for k, v in groups.items()}


def main_table(
    rows: Iterable[Mapping[str, Any]],
    benchmarks: Sequence[str] = (),
    evaluators: Sequence[str] = (),
    methods: Sequence[str] | None = None,
    title: str = "Table 1: judge scores (0-10) by benchmark and evaluator",
) -> Table:
    """Table 1: rows editor x method, columns benchmark x evaluator, then Average with the delta
    against the same editor's Original row; best per column bold, second underlined.

    `methods` (labels or globs) picks the rows; by default the paper's three (Original, w/o RL,
    ImageEdit-R1) when any is present, else every method."""
    rows = list(rows)
    if not rows:
        raise ValueError("no score rows to tabulate")
    present = ordered_unique(r["method"] for r in rows)
    if methods is None:
        methods = [m for m in METHOD_ORDER if m in present] or present
    chosen = select_methods(present, methods)
    if not chosen:
        raise ValueError(f"none of the methods {list(methods)} has scores (present: {present})")
    rows = [r for r in rows if r["method"] in chosen]
    ok, failed = _ok(rows)
    benchmarks = ordered_unique((r["benchmark"] for r in rows), benchmarks)
    evaluators = ordered_unique((r["evaluator"] for r in rows), evaluators)
    editors = ordered_unique(r["editor"] for r in rows)
    means = cell_means(ok, ("editor", "method", "benchmark", "evaluator"))
    columns = [(b, e) for b in benchmarks for e in evaluators]
    header = ["Edit Model", "Method", *[f"{b} · {e}" for b, e in columns], "Average"]
    table = Table(
        title=title, header=header, rows=[], notes=_failure_note(failed, len(rows)), group_first_column=True
    )
    incomplete = []
    for editor in editors:
        editor_methods = ordered_unique((r["method"] for r in rows if r["editor"] == editor), chosen)
        averages: dict[str, float | None] = {}
        for method in editor_methods:
            cells = [means.get((editor, method, b, e), (None, 0))[0] for b, e in columns]
            present = [c for c in cells if c is not None]
            averages[method] = _mean(present)
            if present and len(present) < len(cells):
                incomplete.append(f"{editor} / {method_name(method)}")
            table.rows.append([editor, method_name(method), *cells, averages[method]])
        baseline = averages.get(BASELINE)
        for offset, method in enumerate(editor_methods):
            average = averages[method]
            if method != BASELINE and baseline is not None and average is not None:
                row = len(table.rows) - len(editor_methods) + offset
                delta = round(average, DIGITS) - round(baseline, DIGITS)
                table.superscripts[(row, len(header) - 1)] = f"{delta:+.{DIGITS}f}"
    if incomplete:
        table.notes.append(f"Average over the available cells only for: {', '.join(incomplete)}.")
    mark_best(table, range(2, len(header)))
    return table


def select_methods(available: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Method labels matching `patterns` (exact labels or '*' globs), in pattern order, no repeats."""
    out: list[str] = []
    for pattern in patterns:
        for method in available:
            if fnmatch.fnmatchcase(method, pattern) and method not in out:
                out.append(method)
    return out


def ablation_table(
    rows: Iterable[Mapping[str, Any]],
    title: str,
    methods: Sequence[str],
    editor: str | None = None,
    evaluator: str | None = None,
    benchmarks: Sequence[str] = (),
) -> Table | None:
    """Rows = methods (labels or globs), columns = benchmarks, then Avg. One editor (required when
    the rows hold several); with no `evaluator`, a cell is the mean over the evaluators' means.
    None when fewer than two of the methods have scores, or only Table 1's methods do."""
    rows = [r for r in rows if evaluator is None or r["evaluator"] == evaluator]
    editors = ordered_unique(r["editor"] for r in rows)
    if editor is None and len(editors) > 1:
        raise ValueError(f"ablation {title!r}: the scores hold several editors {editors}; choose one")
    rows = [r for r in rows if editor is None or r["editor"] == editor]
    chosen = select_methods(ordered_unique(r["method"] for r in rows), methods)
    rows = [r for r in rows if r["method"] in chosen]
    ok, failed = _ok(rows)
    present = ordered_unique(r["method"] for r in ok)
    if len(present) < 2 or set(present) <= set(METHOD_ORDER):
        return None  # nothing to compare, or nothing Table 1 does not already show
    benchmarks = ordered_unique((r["benchmark"] for r in rows), benchmarks)
    means = cell_means(ok, ("method", "benchmark", "evaluator"))
    header = ["Method", *benchmarks, "Avg."]
    subtitle = ", ".join(x for x in (editor or (editors[0] if editors else None), evaluator) if x)
    table = Table(
        title=f"{title}" + (f" ({subtitle})" if subtitle else ""),
        header=header,
        rows=[],
        notes=_failure_note(failed, len(rows)),
    )
    for method in [m for m in chosen if m in present]:
        cells = []
        for b in benchmarks:
            per_evaluator = [
                mean for (m, bench, _e), (mean, _n) in means.items() if m == method and bench == b
            ]
            cells.append(_mean(per_evaluator))
        table.rows.append([method_name(method), *cells, _mean([c for c in cells if c is not None])])
    mark_best(table, range(1, len(header)))
    return table


# ---------------------------------------------------------------------------------------- human agreement

HUMAN_COLUMNS: tuple[str, ...] = ("id", "annotator", *CRITERIA)


def read_human_scores(path: str) -> list[dict[str, Any]]:
    """Rows of a human-score CSV (`id, annotator, fulfillment, quality, preservation`), validated."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        missing = [c for c in HUMAN_COLUMNS if c not in fields]
        if missing:
            raise ValueError(f"{path}: human-score CSV lacks column(s) {missing} (has {fields})")
        rows = []
        for number, raw in enumerate(reader, start=2):
            raw = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
            row: dict[str, Any] = {"id": raw["id"], "annotator": raw["annotator"]}
            if not row["id"]:
                raise ValueError(f"{path}:{number}: empty id")
            for c in CRITERIA:
                try:
                    value = float(raw[c])
                except ValueError:
                    raise ValueError(f"{path}:{number}: {c} is not a number: {raw[c]!r}") from None
                if not 0 <= value <= RUBRIC[c]:
                    raise ValueError(f"{path}:{number}: {c}={value:g} outside 0-{RUBRIC[c]}")
                row[c] = value
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no human scores")
    return rows


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r (scipy); None when undefined (fewer than 2 items, or a constant series)."""
    from scipy.stats import pearsonr

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(pearsonr(x, y).statistic)


def human_agreement_table(
    human_rows: Iterable[Mapping[str, Any]],
    vlm_rows: Iterable[Mapping[str, Any]],
    title: str = "Human vs VLM-based evaluation",
) -> Table:
    """Per-criterion means for humans (item means over annotators) and the VLM on the items both
    scored, and the Pearson correlation of the two per-item series.

    `vlm_rows` must hold one successful judgement per id (filter by evaluator/method/editor first)."""
    per_item: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for h in human_rows:
        per_item[h["id"]].append(h)
    vlm: dict[str, Mapping[str, Any]] = {}
    for r in vlm_rows:
        if r.get("error") is not None:
            continue
        if r["id"] in vlm:
            raise ValueError(
                f"VLM scores hold several judgements for id {r['id']!r} "
                f"({vlm[r['id']]['evaluator']}/{vlm[r['id']]['method']} and {r['evaluator']}/{r['method']}); "
                "filter by evaluator, method, editor or benchmark"
            )
        vlm[r["id"]] = r
    ids = [i for i in per_item if i in vlm]
    if not ids:
        raise ValueError("no id has both human and VLM scores")
    header = ["Method", *[f"{c.capitalize()} (0–{RUBRIC[c]})" for c in CRITERIA]]
    human_means, vlm_means, correlations = [], [], []
    for c in CRITERIA:
        h = [sum(a[c] for a in per_item[i]) / len(per_item[i]) for i in ids]
        v = [float(vlm[i][c]) for i in ids]
        human_means.append(_mean(h))
        vlm_means.append(_mean(v))
        correlations.append(pearson(h, v))
    annotators = len({a["annotator"] for i in ids for a in per_item[i]})
    unmatched = len(per_item) - len(ids)
    notes = [f"{len(ids)} items, {annotators} annotators; human score = mean over an item's annotators."]
    if unmatched:
        notes.append(f"{unmatched} human-scored items have no successful VLM judgement and are left out.")
    return Table(
        title=title,
        header=header,
        rows=[["Human", *human_means], ["VLM-based", *vlm_means], ["Correlation", *correlations]],
        notes=notes,
    )
