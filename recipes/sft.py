"""Supervised cold start of the tiny policy on CPU (stage 1 of the CPU GRPO path).

A randomly initialised model never samples the answer format, so GRPO has no reward signal to
climb: a short SFT on the exact target answers comes first. Batches come from verl's own
`RLHFDataset` + `collate_fn` over the SFT parquet written by `data_prep` (`messages` = user prompt
with `<image>` + assistant answer, verl's multi-turn SFT layout); the loss is the mean negative
log-likelihood of the answer tokens (and the closing `<|im_end|>`), computed through the same
forward as GRPO's log-probs (mrope positions, vision tokens masked).

    python -m recipes.sft --config-name imageedit_r1_tiny [hydra overrides]   # stage 1 only
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from recipes.cpu_rollout import EncodedPrompts, Rollout, encode_prompts, log_probs


def split_chat(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """(prompt messages, target answer) of an SFT chat whose last message is the assistant's."""
    if not messages or messages[-1].get("role") != "assistant":
        roles = [m.get("role") for m in messages]
        raise ValueError(f"SFT chat must end with an assistant message, got roles {roles}")
    answer = messages[-1]["content"]
    if not isinstance(answer, str):
        answer = "".join(p.get("text", "") for p in answer if p.get("type") == "text")
    return [dict(m) for m in messages[:-1]], answer


def encode_targets(tokenizer, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer token ids + the end-of-turn token, right-padded, and their mask."""
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = [tokenizer(a, add_special_tokens=False)["input_ids"] + [eos] for a in answers]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def sft_batch(processor, batch: Mapping[str, Any]) -> Rollout:
    """One collated SFT batch as a teacher-forced 'rollout' (prompt rows + target responses)."""
    chats, answers = zip(*(split_chat(m) for m in batch["raw_prompt"]), strict=True)
    prompts: EncodedPrompts = encode_prompts(processor, chats)
    ids, mask = encode_targets(processor.tokenizer, answers)
    return Rollout(prompts=prompts, responses=ids, response_mask=mask)


def sft_loss(model, tokenizer, rollout: Rollout) -> torch.Tensor:
    """Mean NLL over the answer tokens of the batch (token-mean, like verl's sft_loss)."""
    from verl.utils.torch_functional import masked_mean

    logp, _ = log_probs(model, tokenizer, rollout)
    return -masked_mean(logp, rollout.response_mask.to(logp.dtype))


def endless(loader) -> Iterator[dict[str, Any]]:
    """Cycle a dataloader forever (its sampler reshuffles every pass)."""
    while True:
        yield from loader


def train_sft(
    model,
    processor,
    batches: Iterator[Mapping[str, Any]],
    steps: int,
    lr: float,
    warmup_steps: int = 0,
    grad_clip: float = 1.0,
    weight_decay: float = 0.0,
    time_budget_s: float | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """AdamW with a linear warm-up then constant lr; stops after `steps` or `time_budget_s` seconds."""
    from tqdm import tqdm
    from verl.utils.torch_functional import get_constant_schedule_with_warmup

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps)
    start = time.perf_counter()
    done, loss_value = 0, float("nan")
    bar = tqdm(total=steps, desc="sft", disable=not progress, mininterval=2)
    try:
        for step in range(1, steps + 1):
            if time_budget_s is not None and time.perf_counter() - start >= time_budget_s:
                break
            rollout = sft_batch(processor, next(batches))
            loss = sft_loss(model, processor.tokenizer, rollout)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            schedule.step()
            done, loss_value = step, float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
            if on_step is not None:
                on_step(
                    step,
                    {
                        "sft/loss": loss_value,
                        "sft/grad_norm": float(grad_norm),
                        "sft/lr": schedule.get_last_lr()[0],
                    },
                )
    finally:
        bar.close()
        model.eval()
    seconds = time.perf_counter() - start
    return {"steps": done, "loss": loss_value, "seconds": seconds, "steps_per_s": done / max(seconds, 1e-9)}


def sft_dataloader(cfg, tokenizer, processor, files: str | Sequence[str], batch_size: int, seed: int):
    """verl's RLHFDataset + sampler + collate_fn over the SFT parquet (prompt column `messages`)."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo.utils import create_rl_dataset, create_rl_sampler
    from verl.utils.dataset.rl_dataset import collate_fn

    from recipes.cpu_grpo import data_config

    data_cfg = data_config(
        cfg,
        prompt_key="messages",
        shuffle=True,
        seed=seed,
        # the SFT chat carries the answer too: allow prompt + answer within the prompt budget
        max_prompt_length=int(cfg.data.max_prompt_length) + int(cfg.data.max_response_length),
    )
    dataset = create_rl_dataset(files, data_cfg, tokenizer, processor, is_train=True)
    if len(dataset) == 0:
        raise ValueError(f"SFT dataset {files} has no usable rows (all filtered or empty)")
    sampler = create_rl_sampler(data_cfg, dataset)
    return StatefulDataLoader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, drop_last=True, num_workers=0
    )


def run_sft_stage(
    cfg, model_dir: str | Path, out_folder: str | Path, logger=None, progress: bool = True
) -> dict:
    """Train from `model_dir` with `cfg.cpu.sft`, save an HF folder at `out_folder`; reuse it if finished."""
    from recipes.cpu_checkpoint import load_policy, save_stage, stage_record

    record = stage_record(out_folder)
    if record is not None:
        print(f"[sft] reusing finished stage {out_folder} ({record.get('steps')} steps)")
        return record
    s = cfg.cpu.sft
    torch.manual_seed(int(cfg.cpu.seed))
    model, processor = load_policy(model_dir)
    files = sft_files(cfg)
    loader = sft_dataloader(cfg, processor.tokenizer, processor, files, int(s.batch_size), int(cfg.cpu.seed))
    on_step = (lambda step, m: logger.log(step, m, stream="sft")) if logger is not None else None
    stats = train_sft(
        model,
        processor,
        endless(loader),
        steps=int(s.steps),
        lr=float(s.lr),
        warmup_steps=int(s.warmup_steps),
        grad_clip=float(s.grad_clip),
        on_step=on_step,
        progress=progress,
    )
    record = {"stage": "sft", "init": str(model_dir), "data": [str(f) for f in files], **stats}
    save_stage(model, processor, out_folder, record)
    return record


def run_sft_control(
    cfg,
    sft_dir: str | Path,
    out_folder: str | Path,
    seconds: float,
    held_out=None,
    logger=None,
    progress: bool = True,
) -> dict:
    """The honest control for GRPO: continue SFT from the same checkpoint for the same wall time.

    On the synthetic set, where exact targets exist, this beat GRPO in the measured runs; a report
    should show it beside the RL result. Saves an HF folder at `out_folder`; returns its numbers.
    """
    from recipes.cpu_checkpoint import load_policy, save_stage, stage_record

    record = stage_record(out_folder)
    if record is not None:
        return record
    s = cfg.cpu.sft
    torch.manual_seed(int(cfg.cpu.seed) + 1)
    model, processor = load_policy(sft_dir)
    loader = sft_dataloader(
        cfg, processor.tokenizer, processor, sft_files(cfg), int(s.batch_size), int(cfg.cpu.seed) + 1
    )
    on_step = (lambda step, m: logger.log(step, m, stream="sft_control")) if logger is not None else None
    stats = train_sft(
        model,
        processor,
        endless(loader),
        steps=10**9,
        lr=float(s.lr),
        warmup_steps=int(s.warmup_steps),
        grad_clip=float(s.grad_clip),
        time_budget_s=seconds,
        on_step=on_step,
        progress=progress,
    )
    record = {"stage": "sft_control", "init": str(sft_dir), "budget_seconds": seconds, **stats}
    if held_out is not None:
        record["held_out"] = held_out.evaluate(model, processor)
    save_stage(model, processor, out_folder, record)
    return record


def sft_files(cfg) -> list[str]:
    """The SFT parquet: `cpu.sft.files` if set, else `<cpu.data.dir>/sft_train.parquet`."""
    files = cfg.cpu.sft.get("files") or [str(Path(cfg.cpu.data.dir) / "sft_train.parquet")]
    files = [files] if isinstance(files, str) else list(files)
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"SFT parquet not found: {missing} (build it with python -m data_prep.synthetic)"
        )
    return files


def main() -> None:
    """Stage 1 only: data and tiny model if missing, then SFT into `<cpu.out_dir>/sft`."""
    from recipes.cpu_grpo import hydra_entry

    hydra_entry(stages=("sft",))


if __name__ == "__main__":
    main()
