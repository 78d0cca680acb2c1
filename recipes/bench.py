"""CPU GRPO and SFT throughput on the tiny Qwen2.5-VL (`make bench`; about a minute).

    python -m recipes.bench [--steps 3] [--out outputs/bench/recipes.json]

Builds a small synthetic set and the tiny model in a temp folder, then times, with the recipe's own
settings (`imageedit_r1_tiny`: 8 prompts x n=8, 48 new tokens, one update per rollout; SFT batch 32):
GRPO steps/s split into generate / reward / old+ref log-probs / update, and SFT steps/s. The first
step of each is a warm-up and not counted. Prints a table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def bench(steps: int = 3, sft_steps: int = 4) -> dict:
    import torch

    from recipes.cpu_checkpoint import load_policy
    from recipes.cpu_grpo import (
        GRPOTrainer,
        compose,
        load_reward_fn,
        prepare_data,
        prepare_model,
        rl_dataloader,
        rl_dataset,
    )
    from recipes.sft import endless, sft_batch, sft_dataloader, sft_files, sft_loss

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="recipes-bench-") as tmp:
        cfg = compose(
            [
                f"cpu.data.dir={tmp}/data",
                "cpu.data.train=96",
                "cpu.data.val=8",
                f"cpu.model.dir={tmp}/model",
                f"cpu.out_dir={tmp}/run",
            ]
        )
        prepare_data(cfg, progress=False)
        model_dir = prepare_model(cfg)
        model, processor = load_policy(model_dir)

        # SFT: optimizer steps on batches of cpu.sft.batch_size
        batch_size = int(cfg.cpu.sft.batch_size)
        batches = endless(sft_dataloader(cfg, processor.tokenizer, processor, sft_files(cfg), batch_size, 0))
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg.cpu.sft.lr))
        sft_times = []
        model.train()
        for i in range(sft_steps + 1):
            t = time.perf_counter()
            loss = sft_loss(model, processor.tokenizer, sft_batch(processor, next(batches)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if i:
                sft_times.append(time.perf_counter() - t)
        model.eval()

        # GRPO: full steps of the recipe
        trainer = GRPOTrainer(cfg, model, processor, load_reward_fn(cfg))
        rl_batches = endless(
            rl_dataloader(cfg, rl_dataset(cfg, cfg.data.train_files, processor.tokenizer, processor))
        )
        phases = ("gen", "reward", "old_log_prob", "ref", "update", "step")
        timings = {p: [] for p in phases}
        for i in range(steps + 1):
            metrics = trainer.step(next(rl_batches), i + 1)
            if i:
                for p in phases:
                    timings[p].append(metrics[f"timing_s/{p}"])
    mean = {p: statistics.mean(v) for p, v in timings.items()}
    sft_mean = statistics.mean(sft_times)
    r = cfg.actor_rollout_ref.rollout
    return {
        "setting": {
            "prompts_per_step": int(cfg.data.train_batch_size),
            "n": int(r.n),
            "max_new_tokens": int(cfg.data.max_response_length),
            "sft_batch_size": batch_size,
            "torch_threads": torch.get_num_threads(),
            "measured_steps": steps,
        },
        "grpo_steps_per_s": 1.0 / mean["step"],
        "grpo_seconds": mean,
        "grpo_share": {p: mean[p] / mean["step"] for p in phases if p != "step"},
        "sft_steps_per_s": 1.0 / sft_mean,
        "grpo_step_over_sft_step": mean["step"] / sft_mean,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3, help="measured GRPO steps (after one warm-up)")
    parser.add_argument("--sft-steps", type=int, default=4, help="measured SFT steps (after one warm-up)")
    parser.add_argument("--out", default="outputs/bench/recipes.json")
    args = parser.parse_args(argv)
    result = bench(args.steps, args.sft_steps)
    s = result["setting"]
    print(f"CPU GRPO, {s['prompts_per_step']} prompts x n={s['n']}, {s['max_new_tokens']} new tokens:")
    print(f"  {'phase':<14}{'s/step':>9}{'share':>8}")
    for phase, share in result["grpo_share"].items():
        print(f"  {phase:<14}{result['grpo_seconds'][phase]:>9.3f}{share:>8.0%}")
    print(
        f"  {'step':<14}{result['grpo_seconds']['step']:>9.3f}   -> {result['grpo_steps_per_s']:.3f} steps/s"
    )
    print(
        f"SFT, batch {s['sft_batch_size']}: {result['sft_steps_per_s']:.3f} steps/s "
        f"(one GRPO step = {result['grpo_step_over_sft_step']:.1f} SFT steps)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2), encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
