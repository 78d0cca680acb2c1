"""verl's own GRPO and SFT steps on this CPU (`make bench`; a few minutes).

    python -m recipes.bench [--steps 6] [--out outputs/bench/recipes.json]

Runs the tiny recipes exactly as `make train` does (the launcher, verl's main_ppo / sft_trainer
through recipes/verl_cpu) on a small synthetic set in a temp folder: GRPO with the recipe's batch
(8 prompts x n=8, 48 new tokens) and the SFT cold start (batch 32). Reports seconds per step split
into verl's own phases (`timing_s/*`, the first step is a warm-up and not counted), start-up time,
and peak memory of the whole process tree (RSS summed, and PSS, which counts shared pages once).

The hand-written CPU GRPO loop this replaced was measured against verl's in one run before it was
deleted (same batch, same machine): see recipes/verl_cpu/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from recipes.launch import compose, make_train_command

REPO = Path(__file__).resolve().parents[1]
GRPO_PHASES = ("gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights", "step")


def watch(pid: int, metrics: Path, stop: threading.Event, out: dict, every: float = 0.5) -> None:
    """Peak RSS and PSS (GiB) of `pid` and all its descendants (Ray's workers included), and when each
    line of the metrics log appeared (verl's SFT log carries no step timing)."""
    import psutil

    root = psutil.Process(pid)
    start, seen = time.perf_counter(), 0
    out["line_times"] = []
    while not stop.is_set():
        lines = metrics.read_text().count("\n") if metrics.is_file() else 0
        out["line_times"] += [time.perf_counter() - start] * (lines - seen)
        seen = max(seen, lines)
        rss = pss = 0
        try:
            for proc in (root, *root.children(recursive=True)):
                try:
                    info = proc.memory_full_info()
                    rss, pss = rss + info.rss, pss + getattr(info, "pss", info.rss)
                except psutil.Error:
                    continue
        except psutil.Error:
            break
        out["peak_rss_gib"] = max(out.get("peak_rss_gib", 0.0), rss / 2**30)
        out["peak_pss_gib"] = max(out.get("peak_pss_gib", 0.0), pss / 2**30)
        stop.wait(every)


def run_recipe(recipe: str, overrides: list[str], metrics: Path, log: Path) -> dict[str, float]:
    """`make train RECIPE=<recipe>` as a subprocess, watched; its wall time and memory."""
    env = {
        **os.environ,
        "VERL_FILE_LOGGER_PATH": str(metrics),
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(log.parent),
    }
    command = make_train_command(recipe, overrides)
    stop, memory = threading.Event(), {}
    start = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)
        watcher = threading.Thread(target=watch, args=(proc.pid, metrics, stop, memory), daemon=True)
        watcher.start()
        code = proc.wait()
        stop.set()
        watcher.join()
    if code:
        raise RuntimeError(f"{recipe} failed (exit {code}); its log: {log}")
    return {"wall_s": time.perf_counter() - start, **memory}


def step_rows(metrics: Path) -> list[dict]:
    """The measured steps' metrics (the first step warms up)."""
    from eval.curves import load_metrics

    return [m for m in load_metrics(metrics) if m["step"] >= 2 and "timing_s/step" in m]


def bench(steps: int, tmp: Path) -> dict:
    assets = [
        f"assets.data.dir={tmp}/data",
        f"assets.model.dir={tmp}/vlm",
        "assets.data.train=96",
        "assets.data.val=8",
    ]
    common = ["trainer.save_freq=-1", "trainer.test_freq=-1", f"trainer.total_training_steps={steps + 1}"]
    grpo = run_recipe(
        "imageedit_r1_tiny",
        [*assets, *common, "trainer.val_before_train=false", f"trainer.default_local_dir={tmp}/grpo"],
        tmp / "grpo.jsonl",
        tmp / "grpo.log",
    )
    rows = step_rows(tmp / "grpo.jsonl")
    grpo["seconds"] = {
        p: statistics.mean(r[f"timing_s/{p}"] for r in rows)
        for p in GRPO_PHASES
        if f"timing_s/{p}" in rows[0]
    }
    grpo["startup_s"] = grpo["line_times"][0] - grpo["seconds"]["step"] if grpo["line_times"] else None
    sft = run_recipe(
        "sft_tiny",
        [*assets, *common, f"trainer.default_local_dir={tmp}/sft"],
        tmp / "sft.jsonl",
        tmp / "sft.log",
    )
    times = sft["line_times"]  # one line per step, written as the step ends
    sft["seconds_per_step"] = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    sft["startup_s"] = times[0] - (sft["seconds_per_step"] or 0) if times else None
    grpo_cfg, sft_cfg = compose("imageedit_r1_tiny"), compose("sft_tiny")
    return {
        "setting": {
            "prompts_per_step": int(grpo_cfg.data.train_batch_size),
            "n": int(grpo_cfg.actor_rollout_ref.rollout.n),
            "max_new_tokens": int(grpo_cfg.data.max_response_length),
            "sft_batch": int(sft_cfg.data.train_batch_size),
            "measured_steps": steps,
        },
        "grpo": grpo,
        "sft": sft,
        "grpo_steps_per_s": 1.0 / grpo["seconds"]["step"],
    }


def _num(value: float | None, spec: str) -> str:
    """A figure, or n/a where the run logged too few lines to measure it."""
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=6, help="measured GRPO/SFT steps (after one warm-up)")
    parser.add_argument("--out", default="outputs/bench/recipes.json")
    args = parser.parse_args(argv)
    from inference.fileio import write_json

    with tempfile.TemporaryDirectory(prefix="recipes-bench-") as tmp:
        result = bench(args.steps, Path(tmp))
    g, setting = result["grpo"], result["setting"]
    print(
        f"verl main_ppo on CPU, {setting['prompts_per_step']} prompts x n={setting['n']}, "
        f"{setting['max_new_tokens']} new tokens (recipe imageedit_r1_tiny):"
    )
    for phase, seconds in g["seconds"].items():
        share = "" if phase == "step" else f"{seconds / g['seconds']['step']:>7.0%}"
        print(f"  {phase:<15}{seconds:>8.3f} s{share}")
    print(
        f"  start-up {_num(g['startup_s'], '.0f')} s (from the launcher's start: assets, preflight, Ray, "
        f"verl); peak memory {g.get('peak_rss_gib', 0):.1f} GiB RSS summed, {g.get('peak_pss_gib', 0):.1f} GiB PSS"
    )
    s = result["sft"]
    print(
        f"verl sft_trainer on CPU, batch {setting['sft_batch']}: {_num(s['seconds_per_step'], '.3f')} s per step, "
        f"start-up {_num(s['startup_s'], '.0f')} s, peak {s.get('peak_pss_gib', 0):.1f} GiB PSS"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
