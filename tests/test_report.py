"""Reports from the fixture score files (eval/fixtures), checked cell by cell."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval.fixtures.make_fixtures import ABLATIONS, BENCHMARKS, EVALUATORS, TABLE1
from eval.report import build_report
from eval.scores import read_scores
from eval.tables import ablation_table, human_agreement_table, main_table, read_human_scores

FIXTURES = Path(__file__).resolve().parents[1] / "eval" / "fixtures"
MAIN, ABLATION, HUMAN = (
    FIXTURES / "scores_main.jsonl",
    FIXTURES / "scores_ablations.jsonl",
    FIXTURES / "human_scores.csv",
)
NAMES = {"original": "Original", "wo_rl": "ImageEdit-R1 (w/o RL)", "imageedit_r1": "ImageEdit-R1"}


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = build_report(
        [MAIN, ABLATION],
        out,
        human_csv=HUMAN,
        human_filter={"evaluator": "GPT-4o", "editor": "flux_kontext", "method": "imageedit_r1"},
        metrics_logs=[("fixture run", FIXTURES / "metrics.jsonl")],
        ablation_evaluator="GPT-4o",
        benchmarks=BENCHMARKS,
        evaluators=EVALUATORS,
    )
    return out, path.read_text()


def test_table1_csv_cell_by_cell(report):
    out, _ = report
    header, *rows = _csv(out / "table1.csv")
    assert header == [
        "Edit Model",
        "Method",
        *[f"{b} · {e}" for b in BENCHMARKS for e in EVALUATORS],
        "Average",
        "Delta vs Original",
    ]
    expected_rows = list(TABLE1.items())
    assert len(rows) == len(expected_rows)
    for row, ((editor, method), means) in zip(rows, expected_rows, strict=True):
        assert row[:2] == [editor, NAMES[method]]
        assert [float(x) for x in row[2:8]] == list(means)  # the failed judgement moved nothing
        assert float(row[8]) == pytest.approx(round(sum(means) / 6, 4))
    assert [r[9] for r in rows] == ["", "+0.08", "+1.08", "", "-0.67", "+0.58"]


def test_table1_markdown_marks_best_bold_second_underlined(report):
    _, markdown = report
    lines = [ln for ln in markdown.splitlines() if ln.startswith("| ")]
    table = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[1:7]]
    flux_rl, qwen_orig, qwen_wo, qwen_rl = table[2], table[3], table[4], table[5]
    assert table[1][0] == "" and qwen_orig[0] == "qwen_image_edit"  # row groups
    assert qwen_rl[2:] == [
        "**9.00**",
        "**9.00**",
        "**8.50**",
        "**9.00**",
        "**9.00**",
        "**9.50**",
        "**9.00** <sup>+0.58</sup>",
    ]
    assert qwen_orig[4] == "**8.50**"  # tie for best in RealEdit · GPT-4o
    assert flux_rl[4] == "<u>8.00</u>" and qwen_wo[4] == "<u>8.00</u>"  # tie for second
    assert flux_rl[8] == "8.25 <sup>+1.08</sup>" and qwen_orig[8] == "<u>8.42</u>"
    assert "1 of 73 judgements failed" in markdown


def test_ablation_tables(report):
    out, markdown = report
    header, *rows = _csv(out / "ablation_single_vs_multi_turn.csv")
    assert header == ["Method", *BENCHMARKS, "Avg."]
    expected = {
        "Original": (6.0, 7.0, 8.0),
        "Single-turn": ABLATIONS["single"],
        "Multi-turn": ABLATIONS["multi"],
    }
    assert [r[0] for r in rows] == list(expected)
    for r in rows:
        assert [float(x) for x in r[1:4]] == list(expected[r[0]])
        assert float(r[4]) == pytest.approx(round(sum(expected[r[0]]) / 3, 4))
    assert "### Single vs multi-turn (flux_kontext, GPT-4o)" in markdown
    assert "| Single-turn | **8.00** | **8.50** | **9.00** | **8.50** |" in markdown
    assert (out / "ablation_goal_reward.csv").exists() and (out / "ablation_decomposition_model.csv").exists()
    assert not list(out.glob("*qwen_image_edit*.csv"))  # qwen has only Table 1's methods: no ablation


def test_ablation_without_evaluator_averages_the_evaluators():
    rows = read_scores([MAIN, ABLATION])
    table = ablation_table(
        rows, "Goal reward", ["original", "imageedit_r1", "no_goal"], editor="flux_kontext"
    )
    assert [r[0] for r in table.rows] == ["Original", "ImageEdit-R1", "w/o goal reward"]
    assert table.rows[0][1:4] == [6.25, 7.25, 8.0]
    assert table.rows[2][1:4] == list(ABLATIONS["no_goal"])
    with pytest.raises(ValueError, match="several editors"):
        ablation_table(rows, "x", ["original", "no_goal"])
    assert ablation_table(rows, "x", ["original", "imageedit_r1"], editor="flux_kontext") is None


def test_human_agreement_against_an_independent_computation(report):
    out, markdown = report
    humans = read_human_scores(str(HUMAN))
    vlm = {
        r["id"]: r
        for r in read_scores(MAIN)
        if (r["evaluator"], r["editor"], r["method"]) == ("GPT-4o", "flux_kontext", "imageedit_r1")
    }
    header, *rows = _csv(out / "human_agreement.csv")
    assert header == ["Method", "Fulfillment (0–4)", "Quality (0–3)", "Preservation (0–3)"]
    assert [r[0] for r in rows] == ["Human", "VLM-based", "Correlation"]
    ids = sorted(vlm)
    for column, criterion in enumerate(("fulfillment", "quality", "preservation"), start=1):
        h = [np.mean([x[criterion] for x in humans if x["id"] == i]) for i in ids]
        v = [vlm[i][criterion] for i in ids]
        assert float(rows[0][column]) == pytest.approx(np.mean(h), abs=1e-4)
        assert float(rows[1][column]) == pytest.approx(np.mean(v), abs=1e-4)
        assert float(rows[2][column]) == pytest.approx(np.corrcoef(h, v)[0, 1], abs=1e-4)
    assert "6 items, 3 annotators" in markdown


def test_human_agreement_errors_name_the_problem(tmp_path):
    bad = tmp_path / "h.csv"
    bad.write_text("id,annotator,fulfillment,quality\nx,a,1,1\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['preservation'\]"):
        read_human_scores(str(bad))
    bad.write_text("id,annotator,fulfillment,quality,preservation\nx,a,5,1,1\n")
    with pytest.raises(ValueError, match=r"h.csv:2: fulfillment=5 outside 0-4"):
        read_human_scores(str(bad))
    humans = read_human_scores(str(HUMAN))
    with pytest.raises(ValueError, match="several judgements for id"):
        human_agreement_table(humans, read_scores(MAIN))


def test_figures_and_files(report):
    out, markdown = report
    for name in (
        "bars_psr.png",
        "bars_realedit.png",
        "bars_ultraedit.png",
        "reward_curves.png",
        "table1_cells.csv",
    ):
        assert (out / name).stat().st_size > 0, name
        assert name in markdown
    cells = _csv(out / "table1_cells.csv")
    failed_cell = next(r for r in cells if r[:4] == ["flux_kontext", "original", "PSR", "GPT-4o"])
    assert failed_cell[4] == "6.0" and failed_cell[-2:] == ["2", "1"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic writes left no temp files


def test_reference_section_and_main_table_method_choice(tmp_path):
    rows = [
        {
            "id": f"s{i}",
            "benchmark": "synthetic",
            "editor": "tool",
            "method": m,
            "psnr": p,
            "ssim": s,
            "psnr_outside": 100.0,
            "ssim_outside": 1.0,
            "region_fraction": 0.2,
            "exact": e,
            "decomposition": {"score": 1.0, "format": 1.0, "action": a, "subject": 1.0, "goal": 0.5},
            "error": None,
        }
        for i, (m, p, s, e, a) in enumerate(
            [("original", 20.0, 0.8, False, 0.5), ("imageedit_r1", 100.0, 1.0, True, 1.0)]
        )
    ]
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps(r) + "\n" for r in rows))
    build_report([MAIN], tmp_path / "r", reference_paths=[ref])
    header, *table = _csv(tmp_path / "r" / "reference.csv")
    assert header[:5] == ["Benchmark", "Edit Model", "Method", "PSNR", "SSIM"] and "F1 action" in header
    assert table[0][:6] == ["synthetic", "tool", "Original", "20.0", "0.8", "100.0"]
    assert table[1][header.index("Exact")] == "1.0"
    only_rl = main_table(read_scores(MAIN), methods=["imageedit_r1"])
    assert [r[1] for r in only_rl.rows] == ["ImageEdit-R1", "ImageEdit-R1"] and not only_rl.superscripts


def test_cli_report_entry_point(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "eval",
            "report",
            "--scores",
            str(MAIN),
            "--out",
            str(out),
            "--metrics",
            f"run={FIXTURES / 'metrics.jsonl'}",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == out / "report.md"
    assert (out / "reward_curves.png").exists() and (out / "table1.csv").exists()


def test_report_warns_on_duplicate_rows_of_one_item(tmp_path, caplog):
    from eval.scores import duplicate_keys

    rows = read_scores(MAIN)
    assert duplicate_keys(rows) == {}
    copy = tmp_path / "again.jsonl"
    copy.write_text(MAIN.read_text().splitlines()[0] + "\n")  # a rerun's row in a second file
    with caplog.at_level("WARNING"):
        report = build_report([MAIN, copy], tmp_path / "r").read_text()
    assert (
        "WARNING: 1 (item, benchmark, method, editor, evaluator) keys have more than one score row" in report
    )
    assert "more than one score row" in caplog.text
