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
import sys
import tempfile
import threading
import time
from pathlib import Path

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
    command = [sys.executable, "-m", "recipes.launch", "--recipe", recipe, "train", "--", *overrides]
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
    from inference.fileio import read_jsonl

    rows = list(read_jsonl(metrics))
    return [r["data"] for r in rows if r["step"] >= 2 and "timing_s/step" in r["data"]]


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
    return {
        "setting": {
            "prompts_per_step": 8,
            "n": 8,
            "max_new_tokens": 48,
            "sft_batch": 32,
            "measured_steps": steps,
        },
        "grpo": grpo,
        "sft": sft,
        "grpo_steps_per_s": 1.0 / grpo["seconds"]["step"],
    }


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
    g = result["grpo"]
    print("verl main_ppo on CPU, 8 prompts x n=8, 48 new tokens (recipe imageedit_r1_tiny):")
    for phase, seconds in g["seconds"].items():
        share = "" if phase == "step" else f"{seconds / g['seconds']['step']:>7.0%}"
        print(f"  {phase:<15}{seconds:>8.3f} s{share}")
    print(
        f"  start-up {g['startup_s']:.0f} s; peak memory {g.get('peak_rss_gib', 0):.1f} GiB RSS summed, {g.get('peak_pss_gib', 0):.1f} GiB PSS"
    )
    s = result["sft"]
    print(
        f"verl sft_trainer on CPU, batch 32: {s['seconds_per_step']:.3f} s per step, start-up {s['startup_s']:.0f} s, "
        f"peak {s.get('peak_pss_gib', 0):.1f} GiB PSS"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
