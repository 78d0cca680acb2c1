"""Reports from score files: Markdown + CSV + PNG (matplotlib Agg) in one folder.

    report.md                 every table below, with the figures linked
    table1.csv                Table 1 (editor x method by benchmark x evaluator, Average, delta)
    table1_cells.csv          per cell: mean total and criteria, judged and failed counts
    ablation_<name>.csv       one per ablation with two or more scored methods
    human_agreement.csv       human vs VLM criterion means and Pearson correlations
    reference.csv             reference metrics per benchmark x editor x method
    bars_<benchmark>.png      mean judge score per editor and method
    reward_curves*.png        training reward curves (eval.curves)

Every file is written atomically (temp file in the folder, then os.replace).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eval.curves import load_metrics, plot_reward_curves, save_figure_atomic
from eval.parsing import CRITERIA
from eval.scores import duplicate_keys, read_scores
from eval.tables import (
    DEFAULT_ABLATIONS,
    METHOD_ORDER,
    Table,
    ablation_table,
    human_agreement_table,
    main_table,
    mark_best,
    method_name,
    ordered_unique,
    read_human_scores,
    select_methods,
)
from inference.fileio import write_text

log = logging.getLogger(__name__)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


def cells_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Long form of Table 1's cells: means of total and each criterion, judged and failed counts."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["editor"], r["method"], r["benchmark"], r["evaluator"])].append(r)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["editor", "method", "benchmark", "evaluator", "total", *CRITERIA, "judged", "failed"])
    for key, group in groups.items():
        ok = [r for r in group if r.get("error") is None]
        means = [round(sum(float(r[c]) for r in ok) / len(ok), 4) if ok else "" for c in ("total", *CRITERIA)]
        writer.writerow([*key, *means, len(ok), len(group) - len(ok)])
    return buf.getvalue()


def plot_benchmark_bars(
    rows: Sequence[Mapping[str, Any]],
    benchmark: str,
    out_png: str | os.PathLike,
    methods: Sequence[str] | None = None,
) -> Path:
    """Grouped bars for one benchmark: x = editor, one bar per method (default: all), height =
    mean over the evaluators of their mean total (Table 1's averaging). No scores, no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["benchmark"] == benchmark and r.get("error") is None]
    methods = list(methods or ordered_unique((r["method"] for r in rows), METHOD_ORDER))
    rows = [r for r in rows if r["method"] in methods]
    editors = ordered_unique(r["editor"] for r in rows)
    per_cell: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in rows:
        per_cell[(r["editor"], r["method"], r["evaluator"])].append(float(r["total"]))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(editors) * max(1, len(methods)) / 2), 3.6))
    try:
        width = 0.8 / max(1, len(methods))
        for j, method in enumerate(methods):
            xs, heights = [], []
            for i, editor in enumerate(editors):
                evaluator_means = [
                    sum(v) / len(v) for (e, m, _), v in per_cell.items() if e == editor and m == method
                ]
                if evaluator_means:
                    xs.append(i + (j - (len(methods) - 1) / 2) * width)
                    heights.append(sum(evaluator_means) / len(evaluator_means))
            if xs:
                bars = ax.bar(xs, heights, width, label=method_name(method))
                ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        ax.set_xticks(range(len(editors)), editors)
        ax.set_ylim(0, 10.5)
        ax.set_ylabel("judge score (0-10)")
        ax.set_title(benchmark)
        ax.legend(
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncol=min(3, len(methods)),
            frameon=False,
        )
        return save_figure_atomic(fig, out_png)
    finally:
        plt.close(fig)


REFERENCE_COLUMNS: dict[str, str] = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "psnr_outside": "PSNR out",
    "ssim_outside": "SSIM out",
    "exact": "Exact",
    "format": "Format",
    "f1_action": "F1 action",
    "f1_subject": "F1 subject",
    "f1_goal": "F1 goal",
}


def reference_table(summaries: Sequence[Mapping[str, Any]]) -> Table:
    """Reference metrics (eval.reference summaries) per benchmark x editor x method; best bold."""
    keys = [k for k in REFERENCE_COLUMNS if any(s.get(k) is not None for s in summaries)]
    table = Table(
        title="Reference metrics (against the reference edit; 'out' = outside the edited region)",
        header=["Benchmark", "Edit Model", "Method", *[REFERENCE_COLUMNS[k] for k in keys], "Items"],
        rows=[],
        digits=3,
    )
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    ordered = sorted(
        summaries, key=lambda s: (s["benchmark"], s["editor"], order.get(s["method"], len(order)))
    )
    for s in ordered:
        table.rows.append(
            [
                s["benchmark"],
                s["editor"],
                method_name(s["method"]),
                *[s.get(k) for k in keys],
                str(s["items"]),
            ]
        )
    mark_best(table, range(3, 3 + len(keys)))
    errors = sum(int(s.get("errors") or 0) for s in summaries)
    if errors:
        table.notes.append(
            f"{errors} items had no output or no reference: excluded from the image metrics; "
            "on the synthetic set a missing output counts as not exact."
        )
    return table


def build_report(
    score_paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    human_csv: str | os.PathLike | None = None,
    human_filter: Mapping[str, str] | None = None,
    metrics_logs: Sequence[tuple[str, str | os.PathLike]] = (),
    reference_paths: Sequence[str | os.PathLike] = (),
    ablations: Mapping[str, Sequence[str]] | None = None,
    ablation_editor: str | None = None,
    ablation_evaluator: str | None = None,
    benchmarks: Sequence[str] = (),
    evaluators: Sequence[str] = (),
    table1_methods: Sequence[str] | None = None,
    title: str = "ImageEdit-R1 evaluation report",
) -> Path:
    """Write the whole report into `out_dir`; returns the path of report.md.

    Table 1 and the bar charts show `table1_methods` (labels or globs; default: the paper's
    Original / w/o RL / ImageEdit-R1 when present); ablations default to `DEFAULT_ABLATIONS`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_scores(score_paths)
    if not rows:
        raise ValueError(f"no score rows in {[str(p) for p in score_paths]}")
    sections = [f"# {title}", "", f"Score files: {', '.join(f'`{p}`' for p in score_paths)}.", ""]
    duplicates = duplicate_keys(rows)
    if duplicates:
        (key, n), extra = next(iter(duplicates.items())), sum(duplicates.values()) - len(duplicates)
        warning = (
            f"WARNING: {len(duplicates)} (item, benchmark, method, editor, evaluator) keys have more than one "
            f"score row ({extra} extra rows; e.g. {'/'.join(key)} x{n}); each row counts in the means. "
            "Overlapping score files or a rerun written to a second file?"
        )
        log.warning(warning)
        sections += [f"> {warning}", ""]

    present = ordered_unique(r["method"] for r in rows)
    table1_methods = select_methods(
        present, list(table1_methods or ([m for m in METHOD_ORDER if m in present] or present))
    )
    table1 = main_table(rows, benchmarks=benchmarks, evaluators=evaluators, methods=table1_methods)
    write_text(out / "table1.csv", table1.to_csv())
    write_text(out / "table1_cells.csv", cells_csv(rows))
    sections += [table1.to_markdown(), "Files: `table1.csv`, `table1_cells.csv`.", ""]

    editors = [ablation_editor] if ablation_editor else ordered_unique(r["editor"] for r in rows)
    for name, methods in (ablations if ablations is not None else DEFAULT_ABLATIONS).items():
        made = [
            (editor, table)
            for editor in editors
            if (table := ablation_table(rows, name, methods, editor, ablation_evaluator, benchmarks))
            is not None
        ]
        for editor, table in made:  # the editor in the file name only when several editors have one
            file = f"ablation_{slug(name)}" + (f"_{slug(editor)}" if len(made) > 1 else "") + ".csv"
            write_text(out / file, table.to_csv())
            sections += [table.to_markdown(), f"File: `{file}`.", ""]

    if human_csv is not None:
        wanted = dict(human_filter or {})
        vlm_rows = [r for r in rows if all(r.get(k) == v for k, v in wanted.items())]
        filters = ", ".join(f"{k}={v}" for k, v in wanted.items()) or "all scores"
        table = human_agreement_table(
            read_human_scores(str(human_csv)), vlm_rows, title=f"Human vs VLM-based evaluation ({filters})"
        )
        write_text(out / "human_agreement.csv", table.to_csv())
        sections += [table.to_markdown(), "File: `human_agreement.csv`.", ""]

    if reference_paths:
        from eval.reference import read_reference_rows, summarize_reference_rows

        summaries = summarize_reference_rows(read_reference_rows(reference_paths))
        table = reference_table(summaries)
        write_text(out / "reference.csv", table.to_csv())
        sections += [table.to_markdown(), "File: `reference.csv`.", ""]

    sections += ["### Judge scores per benchmark", ""]
    for benchmark in ordered_unique((r["benchmark"] for r in rows), benchmarks):
        png = plot_benchmark_bars(rows, benchmark, out / f"bars_{slug(benchmark)}.png", table1_methods)
        sections += [f"![{benchmark}]({png.name})", ""]

    if metrics_logs:
        sections += ["### Training rewards", ""]
        for label, path in metrics_logs:
            name = "reward_curves.png" if len(metrics_logs) == 1 else f"reward_curves_{slug(label)}.png"
            png = plot_reward_curves(load_metrics(path), out / name, title=f"Training rewards: {label}")
            sections += [f"![{label}]({png.name})", ""]
    return write_text(out / "report.md", "\n".join(sections))
