"""`make demo`: the whole ImageEdit-R1 loop on a CPU, on built-in defaults.

synthetic data -> tiny Qwen2.5-VL -> SFT cold start -> GRPO (the CPU path of the tiny recipe)
-> three-agent pipeline (trained decomposer, template sequencer, exact tool editor) in single- and
multi-turn modes -> reference evaluation -> `outputs/demo/report.md`.

Every stage reuses what an earlier run finished, so a rerun takes seconds. `--quick` is the
reduced configuration the tests run. Any further arguments are Hydra overrides of the recipe.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

#: Reduced sizes for the end-to-end test (mechanics only; the numbers mean little).
QUICK_OVERRIDES = [
    "cpu.data.train=64",
    "cpu.data.val=8",
    "cpu.sft.steps=20",
    "cpu.sft.batch_size=16",
    "trainer.total_training_steps=2",
    "data.train_batch_size=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.rollout.n=4",
    "cpu.eval_every=2",
    "cpu.eval_items=4",
    "cpu.model.text_hidden=64",
]
#: Pipeline variants: (label, decomposer folder key or "ground_truth").
MODES = ("single", "multi")


def compose_demo_config(out: Path, quick: bool, overrides: list[str]):
    """The tiny CPU recipe with every output under `out`."""
    from recipes.cpu_grpo import compose

    paths = [
        f"cpu.out_dir={out}/run",
        f"cpu.data.dir={out}/data",
        f"cpu.model.dir={out}/tiny_vlm",
        "trainer.experiment_name=demo" + ("_quick" if quick else ""),
    ]
    return compose(paths + (QUICK_OVERRIDES if quick else []) + overrides)


def run_pipeline(
    records: Path,
    out: Path,
    label: str,
    model: str | None,
    modes: tuple[str, ...],
    limit: int | None,
    attempts: int = 3,
) -> dict[str, Path]:
    """Run the three-agent pipeline over the held-out records; returns {mode: run folder}."""
    from inference.cli import main as pipeline_main

    argv = [
        "--records",
        str(records),
        "--out",
        str(out / label),
        "--editor",
        "tool",
        "--sequencer",
        "template",
        "--no-progress",
        "--batch-size",
        "16",
    ]
    if model is None:
        argv += ["--decomposer", "ground_truth"]
    else:
        argv += [
            "--backend",
            "transformers",
            "--llm-model",
            model,
            "--max-new-tokens",
            "64",
            "--max-attempts",
            str(attempts),
        ]
    if limit:
        argv += ["--limit", str(limit)]
    for mode in modes:
        argv += ["--mode", mode]
    pipeline_main(argv)
    return {mode: out / label / mode for mode in modes}


def evaluate(runs: dict[str, dict[str, Path]], records: Path, out: Path) -> list[dict[str, Any]]:
    """Decomposition F1 and exact edit correctness of every run against the synthetic ground truth."""
    from eval.reference import score_run_against_references, summarize_reference_rows

    rows = []
    for label, by_mode in runs.items():
        for mode, folder in by_mode.items():
            rows += score_run_against_references(
                folder, records, out / f"{label}_{mode}.jsonl", method=f"{label} / {mode}", editor="tool"
            )
    return summarize_reference_rows(rows)


def before_after_strip(records: Path, runs: dict[str, Path], out_png: Path, n: int = 4) -> Path | None:
    """A grid: input | target | each run's output, for the first `n` held-out items."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from data_prep.records import read_records
    from inference.pipeline import read_traces

    records_by_id = {r.id: r for r in read_records(records)}
    traces = {label: {t["id"]: t for t in read_traces(folder)} for label, folder in runs.items()}
    ids = [i for i in records_by_id if all(i in t for t in traces.values())][:n]
    if not ids:
        return None
    cols = 2 + len(runs)
    fig, axes = plt.subplots(len(ids), cols, figsize=(2.1 * cols, 2.3 * len(ids)), squeeze=False)
    for r, item_id in enumerate(ids):
        rec = records_by_id[item_id]
        panels = [("input", rec.load_image()), ("target", Image.open(rec.references[0]))]
        for label in runs:
            path = traces[label][item_id].get("output_image")
            panels.append((label, Image.open(path) if path else None))
        for c, (title, img) in enumerate(panels):
            ax = axes[r][c]
            ax.axis("off")
            if img is not None:
                ax.imshow(img)
            else:
                ax.text(0.5, 0.5, "no output", ha="center", va="center")
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r][0].text(
            0, -0.08, rec.instruction[:70], transform=axes[r][0].transAxes, fontsize=6, va="top", wrap=True
        )
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def write_report(
    out: Path, cfg, train: dict[str, Any], summaries: list[dict[str, Any]], strip: Path | None, seconds: float
) -> Path:
    """outputs/demo/report.md: what ran, what was measured, and what it does not show."""
    from eval.report import reference_table
    from eval.tables import Table

    held = train.get("held_out") or {}
    before, after = held.get("before") or {}, held.get("after") or {}
    held_table = Table(
        title="Held-out decomposition reward (verl-style scoring of the agent's answers)",
        header=[
            "Checkpoint",
            "greedy score",
            "sampled score",
            "format",
            "action F1",
            "subject F1",
            "goal F1",
        ],
        rows=[],
        digits=3,
    )
    keys = ("score", "format", "action", "subject", "goal")
    for name, ev in (("cold start (SFT)", before), ("after GRPO", after)):
        greedy = [ev.get(f"val/reward/greedy/{k}") for k in keys]
        held_table.rows.append([name, greedy[0], ev.get("val/reward/sampled/score"), *greedy[1:]])
    control = train.get("sft_control")
    lines = [
        "# ImageEdit-R1 demo report (CPU, tiny model)",
        "",
        "**What this is.** The whole ImageEdit-R1 loop at toy scale: a *randomly initialised* tiny "
        f"Qwen2.5-VL ({cfg.cpu.model.text_hidden}-dim text, {cfg.cpu.model.text_layers} layers; the real "
        "classes, not the 7B weights) learns to decompose edit requests about synthetic shape scenes, "
        "first by a supervised cold start, then by GRPO with the paper's reward (format + F1 on actions, "
        "subjects, goals) using verl's own advantage, policy-loss and KL functions. The pipeline then "
        "runs decomposition -> template sequencing -> an exact tool editor. **These numbers show the "
        "machinery working; they are not, and do not estimate, the paper's scores.**",
        "",
        f"Wall time of this run: {seconds / 60:.1f} min (stages reused from earlier runs are not re-timed).",
        "",
        "## Training",
        "",
        f"- data: {cfg.cpu.data.train} synthetic training items, {cfg.cpu.data.val} held out (seed {cfg.cpu.data.seed})",
        f"- cold start: {cfg.cpu.sft.steps} SFT steps (batch {cfg.cpu.sft.batch_size}, lr {cfg.cpu.sft.lr})",
        f"- GRPO: {train.get('grpo_steps')} steps of {cfg.data.train_batch_size} prompts x "
        f"{cfg.actor_rollout_ref.rollout.n} rollouts, temperature {cfg.actor_rollout_ref.rollout.temperature}, "
        f"lr {cfg.actor_rollout_ref.actor.optim.lr}, KL {cfg.actor_rollout_ref.actor.kl_loss_type} x "
        f"{cfg.actor_rollout_ref.actor.kl_loss_coef}; {_fmt(train.get('grpo_steps_per_s'))} steps/s",
        f"- curves: W&B run in `{train.get('wandb_dir')}` (offline unless WANDB_API_KEY), per-step log `{train.get('metrics')}`",
        "",
    ]
    png = train.get("png")
    if png:
        dst = out / "reward_curves.png"
        shutil.copyfile(png, dst)
        lines += ["![reward curves](reward_curves.png)", ""]
    lines += [held_table.to_markdown(), ""]
    if control:
        lines += [
            "Control: continued SFT for the same wall time as GRPO "
            f"(the fair comparison when exact targets exist): {json.dumps(control, default=str)[:400]}",
            "",
        ]
    lines += [
        "## Pipeline on held-out items",
        "",
        "Exact = the edited scene equals the target scene; the oracle row uses the ground-truth "
        "decomposition (an upper bound for the template sequencer, which loses information the "
        "decomposition does not carry, e.g. the size of an added object).",
        "",
        reference_table(summaries).to_markdown(),
        "",
    ]
    if strip:
        lines += ["![before/after](before_after.png)", ""]
    lines += [
        "## Reading it honestly",
        "",
        "- Compare the cold-start and GRPO rows, greedy and sampled, before crediting RL; a finding "
        "that does not hold here is reported as measured.",
        "- The notes of the run that set these knobs found that continuing SFT for the same time "
        "gained more than GRPO on this task (exact targets exist); GRPO's role at scale is where no "
        "exact target is available.",
        "",
    ]
    report = out / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(report)
    return report


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--quick", action="store_true", help="reduced sizes (the end-to-end test)")
    parser.add_argument("--limit", type=int, default=None, help="held-out items run through the pipeline")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the tiny recipe")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose_demo_config(out, args.quick, args.overrides)

    from recipes.cpu_grpo import run as train_cpu

    print("[demo] 1/3 data, tiny model, SFT cold start, GRPO")
    train = train_cpu(cfg)
    records = Path(cfg.cpu.data.dir) / "eval"
    limit = args.limit or (4 if args.quick else None)
    attempts = 1 if args.quick else 3
    print("[demo] 2/3 pipeline: oracle, cold start, GRPO x single/multi (+ original for reference)")
    runs = {
        "oracle": run_pipeline(records, out / "pipeline", "oracle", None, MODES, limit),
        "cold start": run_pipeline(records, out / "pipeline", "sft", train["sft"], MODES, limit, attempts),
        "GRPO": run_pipeline(
            records, out / "pipeline", "grpo", train["grpo"], MODES + ("original",), limit, attempts
        ),
    }
    print("[demo] 3/3 evaluation and report")
    summaries = evaluate(runs, records, out / "scores")
    strip = before_after_strip(
        records,
        {
            "oracle": runs["oracle"]["single"],
            "cold start": runs["cold start"]["single"],
            "GRPO": runs["GRPO"]["single"],
        },
        out / "before_after.png",
    )
    report = write_report(out, cfg, train, summaries, strip, time.perf_counter() - t0)
    print(f"[demo] report: {report}")
    return report


if __name__ == "__main__":
    main()
