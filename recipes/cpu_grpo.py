"""Real GRPO on CPU, in one process, on a tiny Qwen2.5-VL and the synthetic set (issue 5, item 4).

    python -m recipes.cpu_grpo --config-name imageedit_r1_tiny [hydra overrides]

The recipe is the composed verl config (`recipes/config/imageedit_r1_tiny.yaml`): verl's own keys
drive the algorithm, a `cpu:` block carries what verl has no key for. Stages, each reused on rerun
when its folder is complete:

1. data: `data_prep.synthetic.write_dataset` into `cpu.data.dir` (RL + SFT parquet, corpus.txt);
2. model: `inference.tiny.build_tiny_vlm` into `cpu.model.dir`, tokenizer trained on the corpus;
3. SFT cold start (`recipes.sft`) -> `<cpu.out_dir>/sft/` (HF folder);
4. GRPO -> `<cpu.out_dir>/grpo/` (HF folder): rollouts with transformers `generate`
   (`actor_rollout_ref.rollout.n/temperature/top_p/top_k`), our reward through verl's own loader
   (`reward.custom_reward_function`), verl's `compute_grpo_outcome_advantage`,
   `get_policy_loss_fn`, `kl_penalty` and `agg_loss`, on batches from verl's `RLHFDataset`.

Every GRPO step logs `train/reward/<score|component>` (names from `reward_fns.components`),
response length, KL, entropy, losses and timings to a W&B run (offline unless WANDB_API_KEY) and
to `<cpu.out_dir>/metrics.jsonl`; every `cpu.eval_every` steps the held-out greedy and sampled
rewards (`val/reward/<greedy|sampled>/<key>`); at the end `<cpu.out_dir>/reward_curves.png`.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recipes.cpu_rollout import Rollout, decode_responses, encode_prompts, log_probs, sample, slice_rows
from reward_fns.components import REWARD_COMPONENTS, SCORE_KEY, train_metric

#: Images are upscaled to 112x112 (8x8 patches, 16 image tokens): measured to let the tiny vision
#: tower see colours; the default 56x56 (4 tokens) stalls on subjects named by colour only.
DEFAULT_IMAGE_PIXELS = 112 * 112
RUN_RECORD = "run.json"
#: Resume point of an unfinished GRPO stage (every `trainer.save_freq` steps; removed when done).
RESUME_FILE = "grpo_resume.pt"


# ----------------------------------------------------------------------------- data and model
def prepare_data(cfg, progress: bool = True) -> Path:
    """Build the synthetic set into `cpu.data.dir` unless a manifest with the same sizes is there."""
    import json

    d = cfg.cpu.data
    out = Path(d.dir)
    manifest = out / "manifest.json"
    want = {
        "train": int(d.train),
        "val": int(d.val),
        "seed": int(d.seed),
        "max_edits": int(d.get("max_edits", 4)),
    }
    if manifest.is_file():
        have = json.loads(manifest.read_text(encoding="utf-8"))
        if all(have.get(k) == v for k, v in want.items()):
            return out
        print(f"[data] {out} holds { ({k: have.get(k) for k in want}) }, want {want}: rebuilding")
    from data_prep.synthetic import write_dataset

    print(f"[data] building the synthetic set into {out} {want}")
    write_dataset(out, progress=progress, **want)
    return out


def prepare_model(cfg) -> Path:
    """Build the tiny Qwen2.5-VL into `cpu.model.dir` (tokenizer trained on the data's corpus.txt)."""
    from inference.tiny import TinyVLMSize, build_tiny_vlm

    m = cfg.cpu.model
    out = Path(m.dir)
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    corpus_file = Path(cfg.cpu.data.dir) / "corpus.txt"
    corpus = corpus_file.read_text(encoding="utf-8").splitlines() if corpus_file.is_file() else None
    pixels = int(m.get("image_pixels", DEFAULT_IMAGE_PIXELS))
    size = TinyVLMSize(
        text_hidden=int(m.text_hidden),
        text_layers=int(m.text_layers),
        vision_hidden=int(m.vision_hidden),
        min_pixels=pixels,
        max_pixels=pixels,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build_tiny_vlm(tmp, corpus=corpus, seed=int(cfg.cpu.seed), size=size)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"[model] built tiny Qwen2.5-VL at {out} ({size})")
    return out


def data_config(cfg, **changes: Any):
    """A resolved copy of `cfg.data` for verl's RLHFDataset, with `changes` applied.

    The overlong-prompt filter runs in this process (`filter_overlong_prompts_workers=None`): with a
    worker count verl's datasets.filter forks a pool, which hangs once torch and W&B threads run.
    """
    from omegaconf import OmegaConf, open_dict

    data = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))
    with open_dict(data):
        data.filter_overlong_prompts_workers = None
        for key, value in changes.items():
            data[key] = value
    return data


def rl_dataset(cfg, files, tokenizer, processor, max_samples: int = -1):
    """verl's own RLHFDataset over our RL parquet."""
    from verl.trainer.ppo.utils import create_rl_dataset

    dataset = create_rl_dataset(
        files, data_config(cfg), tokenizer, processor, is_train=True, max_samples=max_samples
    )
    if len(dataset) == 0:
        raise ValueError(f"RL dataset {files} has no usable rows (all filtered or empty)")
    return dataset


def rl_dataloader(cfg, dataset):
    """verl's sampler (seeded by data.seed) + collate_fn; batches of `data.train_batch_size` prompts."""
    from torchdata.stateful_dataloader import StatefulDataLoader
    from verl.trainer.ppo.utils import create_rl_sampler
    from verl.utils.dataset.rl_dataset import collate_fn

    return StatefulDataLoader(
        dataset,
        batch_size=int(cfg.data.train_batch_size),
        sampler=create_rl_sampler(cfg.data, dataset),
        collate_fn=collate_fn,
        drop_last=True,
        num_workers=0,
    )


# ----------------------------------------------------------------------------- reward
def load_reward_fn(cfg) -> Callable[..., Any]:
    """Our reward through verl's own loader (reads reward.custom_reward_function.path/name/kwargs)."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(cfg)
    if fn is None:
        raise ValueError("reward.custom_reward_function.path is not set in the recipe")
    return fn


def score_responses(
    reward_fn,
    texts: Sequence[str],
    ground_truths: Sequence[str],
    data_sources: Sequence[str],
    extras: Sequence[Any],
) -> list[dict[str, float]]:
    """One reward dict per response (`score` + components), as verl's naive reward loop calls it."""
    out = []
    for text, gt, source, extra in zip(texts, ground_truths, data_sources, extras, strict=True):
        result = reward_fn(data_source=source, solution_str=text, ground_truth=gt, extra_info=extra)
        out.append(dict(result) if isinstance(result, Mapping) else {SCORE_KEY: float(result)})
    return out


def reward_means(rewards: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = [SCORE_KEY, *REWARD_COMPONENTS]
    return {k: float(np.mean([r[k] for r in rewards])) for k in keys if rewards and k in rewards[0]}


# ----------------------------------------------------------------------------- evaluation
class HeldOut:
    """The first `cpu.eval_items` validation prompts, scored greedy and sampled."""

    def __init__(self, cfg, dataset, reward_fn, batch_size: int = 64):
        n = min(int(cfg.cpu.eval_items), len(dataset))
        self.rows = [dataset[i] for i in range(n)]
        self.reward_fn = reward_fn
        self.batch_size = batch_size
        r = cfg.actor_rollout_ref.rollout
        self.max_new_tokens = int(cfg.data.max_response_length)
        self.temperature, self.top_p, self.top_k = (
            float(r.temperature),
            float(r.top_p),
            int(r.get("top_k", -1)),
        )
        self.seed = int(cfg.cpu.seed)

    def evaluate(self, model, processor) -> dict[str, float]:
        """`val/reward/greedy/<key>` and `val/reward/sampled/<key>` means over the held-out items."""
        out: dict[str, float] = {}
        for mode in ("greedy", "sampled"):
            torch.manual_seed(self.seed + 7919)
            rewards = []
            for start in range(0, len(self.rows), self.batch_size):
                rows = self.rows[start : start + self.batch_size]
                prompts = encode_prompts(processor, [r["raw_prompt"] for r in rows])
                rollout = sample(
                    model,
                    processor.tokenizer,
                    prompts,
                    self.max_new_tokens,
                    temperature=self.temperature,
                    top_p=self.top_p,
                    top_k=self.top_k,
                    greedy=mode == "greedy",
                )
                rewards += score_responses(
                    self.reward_fn,
                    decode_responses(processor.tokenizer, rollout),
                    [r["reward_model"]["ground_truth"] for r in rows],
                    [r["data_source"] for r in rows],
                    [r.get("extra_info") for r in rows],
                )
            out.update({f"val/reward/{mode}/{k}": v for k, v in reward_means(rewards).items()})
        return out


# ----------------------------------------------------------------------------- GRPO
def actor_config(cfg):
    """verl's FSDPActorConfig from the recipe (clip ratio, loss aggregation, KL type/coef, ...)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


def _chunks(total: int, size: int) -> list[slice]:
    size = max(1, int(size))
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


@torch.no_grad()
def batched_log_probs(model, tokenizer, rollout: Rollout, micro: int, temperature: float) -> torch.Tensor:
    return torch.cat(
        [
            log_probs(model, tokenizer, slice_rows(rollout, s), temperature)[0]
            for s in _chunks(len(rollout.responses), micro)
        ]
    )


class GRPOTrainer:
    """One process: policy, frozen reference, AdamW; `step(batch)` runs one GRPO iteration."""

    def __init__(self, cfg, model, processor, reward_fn):
        self.cfg = cfg
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.reward_fn = reward_fn
        self.ref = copy.deepcopy(model).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.actor = actor_config(cfg)
        optim = cfg.actor_rollout_ref.actor.optim
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=float(optim.lr),
            weight_decay=float(optim.get("weight_decay", 0.01)),
            betas=tuple(optim.get("betas", (0.9, 0.999))),
        )
        r = cfg.actor_rollout_ref.rollout
        self.n = int(r.n)
        self.temperature, self.top_p, self.top_k = (
            float(r.temperature),
            float(r.top_p),
            int(r.get("top_k", -1)),
        )
        self.max_new_tokens = int(cfg.data.max_response_length)
        self.logprob_micro = int(r.get("log_prob_micro_batch_size_per_gpu") or self.n)
        self.norm_by_std = bool(cfg.algorithm.get("norm_adv_by_std_in_grpo", True))
        # One epoch over one mini-batch: the weights cannot move before each token's loss is taken, so
        # the old log-probs ARE the current ones (ratio 1). Skip their separate forward unless
        # `+cpu.recompute_old_log_prob=true` (identical numbers; measured to 1e-6 on this path).
        self.on_policy = (
            int(self.actor.ppo_epochs) == 1
            and int(self.actor.ppo_mini_batch_size) >= int(cfg.data.train_batch_size)
            and not bool(cfg.cpu.get("recompute_old_log_prob", False))
        )

    def rollout(self, batch: Mapping[str, Any]) -> tuple[Rollout, np.ndarray]:
        """n samples per prompt (adjacent rows) and the group id of each row."""
        prompts = encode_prompts(self.processor, list(batch["raw_prompt"]), repeat=self.n)
        rollout = sample(
            self.model,
            self.tokenizer,
            prompts,
            self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
        )
        groups = np.repeat(np.arange(len(batch["raw_prompt"])), self.n).astype(object)
        return rollout, groups

    def step(self, batch: Mapping[str, Any], step: int) -> dict[str, float]:
        from verl.trainer.ppo.core_algos import (
            agg_loss,
            compute_grpo_outcome_advantage,
            get_policy_loss_fn,
            kl_penalty,
        )
        from verl.utils.torch_functional import masked_mean

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        torch.manual_seed(int(self.cfg.cpu.seed) * 100003 + step)
        self.model.eval()
        rollout, groups = self.rollout(batch)
        timings["gen"] = time.perf_counter() - t0

        t = time.perf_counter()
        texts = decode_responses(self.tokenizer, rollout)
        rep = lambda xs: [x for x in xs for _ in range(self.n)]  # noqa: E731
        rewards = score_responses(
            self.reward_fn,
            texts,
            rep([rm["ground_truth"] for rm in batch["reward_model"]]),
            rep(list(batch["data_source"])),
            rep(list(batch.get("extra_info", [None] * len(batch["data_source"])))),
        )
        mask = rollout.response_mask
        lengths = mask.sum(dim=1)
        token_rewards = torch.zeros(mask.shape, dtype=torch.float32)
        token_rewards[torch.arange(len(lengths)), (lengths - 1).clamp(min=0)] = torch.tensor(
            [r[SCORE_KEY] for r in rewards], dtype=torch.float32
        )
        advantages, _ = compute_grpo_outcome_advantage(
            token_level_rewards=token_rewards,
            response_mask=mask,
            index=groups,
            norm_adv_by_std_in_grpo=self.norm_by_std,
        )
        timings["reward"] = time.perf_counter() - t

        t = time.perf_counter()
        old_logp = None
        if not self.on_policy:
            old_logp = batched_log_probs(
                self.model, self.tokenizer, rollout, self.logprob_micro, self.temperature
            )
        timings["old_log_prob"] = time.perf_counter() - t
        t = time.perf_counter()
        ref_logp = batched_log_probs(self.ref, self.tokenizer, rollout, self.logprob_micro, self.temperature)
        timings["ref"] = time.perf_counter() - t

        t = time.perf_counter()
        update = self.update(
            rollout, advantages, old_logp, ref_logp, get_policy_loss_fn, kl_penalty, agg_loss
        )
        timings["update"] = time.perf_counter() - t
        timings["step"] = time.perf_counter() - t0

        scores = torch.tensor([r[SCORE_KEY] for r in rewards]).view(-1, self.n)
        metrics = {train_metric(k): v for k, v in reward_means(rewards).items()}
        metrics.update(
            {
                "critic/score/mean": float(scores.mean()),
                "critic/advantages/mean": float(masked_mean(advantages, mask.float())),
                "train/zero_std_group_fraction": float((scores.std(dim=1) < 1e-6).float().mean()),
                "response_length/mean": float(lengths.float().mean()),
                "response_length/max": float(lengths.max()),
                "response_length/clip_ratio": float((mask[:, -1] == 1).float().mean()),
                **update,
                **{f"timing_s/{k}": v for k, v in timings.items()},
            }
        )
        return metrics

    def update(
        self, rollout, advantages, old_logp, ref_logp, policy_loss_fn_of, kl_penalty, agg_loss
    ) -> dict:
        """PPO epochs over mini-batches of `ppo_mini_batch_size` prompts, micro-batches per the recipe."""
        actor = self.actor
        policy_loss_fn = policy_loss_fn_of(actor.policy_loss.get("loss_mode", "vanilla"))
        mask = rollout.response_mask
        total = mask.shape[0]
        mini_rows = int(actor.ppo_mini_batch_size) * self.n
        micro_rows = int(actor.ppo_micro_batch_size_per_gpu or mini_rows)
        sums: dict[str, list[float]] = {}
        self.model.train()
        for _ in range(int(actor.ppo_epochs)):
            for mini in _chunks(total, mini_rows):
                # Normalise over the whole mini-batch, not each micro-batch (verl's own loss code does this;
                # FSDPActorConfig is frozen, so update its dict in place).
                actor.global_batch_info.update(
                    dp_size=1,
                    batch_num_tokens=int(mask[mini].sum()),
                    global_batch_size=mini.stop - mini.start,
                    loss_scale_factor=actor.loss_scale_factor,
                )
                self.optimizer.zero_grad(set_to_none=True)
                for micro in _chunks(mini.stop - mini.start, micro_rows):
                    rows = slice(mini.start + micro.start, mini.start + micro.stop)
                    part = slice_rows(rollout, rows)
                    m = part.response_mask
                    logp, entropy = log_probs(
                        self.model, self.tokenizer, part, self.temperature, with_entropy=True
                    )
                    pg_loss, pg_metrics = policy_loss_fn(
                        old_log_prob=logp.detach() if old_logp is None else old_logp[rows],
                        log_prob=logp,
                        advantages=advantages[rows],
                        response_mask=m,
                        loss_agg_mode=actor.loss_agg_mode,
                        config=actor,
                    )
                    entropy_loss = agg_loss(
                        loss_mat=entropy,
                        loss_mask=m,
                        loss_agg_mode=actor.loss_agg_mode,
                        **actor.global_batch_info,
                    )
                    loss = pg_loss - actor.entropy_coeff * entropy_loss
                    micro_metrics = {"actor/pg_loss": pg_loss, "actor/entropy": entropy_loss, **pg_metrics}
                    if actor.use_kl_loss:
                        kld = kl_penalty(
                            logprob=logp, ref_logprob=ref_logp[rows], kl_penalty=actor.kl_loss_type
                        )
                        kl_loss = agg_loss(
                            loss_mat=kld,
                            loss_mask=m,
                            loss_agg_mode=actor.loss_agg_mode,
                            **actor.global_batch_info,
                        )
                        loss = loss + actor.kl_loss_coef * kl_loss
                        micro_metrics["actor/kl_loss"] = kl_loss
                    loss.backward()
                    for k, v in micro_metrics.items():
                        sums.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(actor.grad_clip))
                self.optimizer.step()
                sums.setdefault("actor/grad_norm", []).append(float(grad_norm))
        self.model.eval()
        # pg/kl/entropy losses are already normalised over the mini-batch: micro parts add up
        additive = {"actor/pg_loss", "actor/entropy", "actor/kl_loss"}
        n_minis = max(1, int(actor.ppo_epochs) * len(_chunks(total, mini_rows)))
        out = {k: (sum(v) / n_minis if k in additive else float(np.mean(v))) for k, v in sums.items()}
        out["actor/kl_coef"] = float(actor.kl_loss_coef) if actor.use_kl_loss else 0.0
        out["actor/lr"] = float(self.optimizer.param_groups[0]["lr"])
        return out


def save_resume_point(path: Path, trainer: GRPOTrainer, loader, step: int, state: Mapping[str, Any]) -> None:
    """Everything a killed GRPO stage needs to go on from `step` (atomic: temp file + os.replace)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(
        {
            "step": step,
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "loader": loader.state_dict(),
            "rng": torch.get_rng_state(),
            **state,
        },
        tmp,
    )
    os.replace(tmp, path)


def train_grpo(
    cfg,
    init_dir: Path,
    logger,
    held_out: HeldOut | None,
    progress: bool = True,
    resume_file: Path | None = None,
) -> dict[str, Any]:
    """Stage 2: GRPO from `init_dir` for `trainer.total_training_steps`; returns the final numbers.

    With `resume_file`, a resume point is saved every `trainer.save_freq` steps and, when present,
    the run goes on from it (weights, AdamW state, data order, evaluations so far).
    """
    from tqdm import tqdm

    from recipes.cpu_checkpoint import load_policy
    from recipes.sft import endless

    model, processor = load_policy(init_dir)
    model.eval()
    reward_fn = load_reward_fn(cfg)
    trainer = GRPOTrainer(cfg, model, processor, reward_fn)  # the reference model is `init_dir`'s
    dataset = rl_dataset(
        cfg, cfg.data.train_files, processor.tokenizer, processor, int(cfg.data.get("train_max_samples", -1))
    )
    loader = rl_dataloader(cfg, dataset)
    steps = int(cfg.trainer.total_training_steps)
    every = int(cfg.cpu.eval_every)
    save_every = int(cfg.trainer.get("save_freq", 0) or 0)
    evals: dict[int, dict[str, float]] = {}
    train_seconds, first = 0.0, 1
    if resume_file is not None and resume_file.is_file():
        point = torch.load(resume_file, weights_only=False)
        model.load_state_dict(point["model"])
        trainer.optimizer.load_state_dict(point["optimizer"])
        loader.load_state_dict(point["loader"])
        torch.set_rng_state(point["rng"])
        evals = {int(k): v for k, v in point["evals"].items()}
        train_seconds, first = float(point["train_seconds"]), int(point["step"]) + 1
        print(f"[grpo] resuming after step {point['step']} from {resume_file}")
    elif held_out is not None:
        evals[0] = held_out.evaluate(model, processor)
        logger.log(0, evals[0])
    batches = endless(loader)
    bar = tqdm(range(first, steps + 1), desc="grpo", disable=not progress, mininterval=2)
    for step in bar:
        metrics = trainer.step(next(batches), step)
        train_seconds += metrics["timing_s/step"]
        if held_out is not None and (step % every == 0 or step == steps):
            t = time.perf_counter()
            evals[step] = held_out.evaluate(model, processor)
            metrics.update(evals[step])
            metrics["timing_s/eval"] = time.perf_counter() - t
        logger.log(step, metrics)
        bar.set_postfix(
            reward=f"{metrics[train_metric(SCORE_KEY)]:.3f}", kl=f"{metrics.get('actor/kl_loss', 0):.4f}"
        )
        if resume_file is not None and save_every > 0 and step % save_every == 0 and step < steps:
            save_resume_point(
                resume_file, trainer, loader, step, {"evals": evals, "train_seconds": train_seconds}
            )
    return {
        "model": model,
        "processor": processor,
        "steps": steps,
        "train_seconds": train_seconds,
        "steps_per_s": steps / max(train_seconds, 1e-9),  # train_seconds add up across resumes
        "evals": {str(k): v for k, v in evals.items()},
    }


# ----------------------------------------------------------------------------- the whole run
def _held_out(cfg, init_dir: Path, reward_fn) -> HeldOut | None:
    from transformers import AutoProcessor

    if int(cfg.cpu.eval_items) <= 0:
        return None
    processor = AutoProcessor.from_pretrained(init_dir)
    val = rl_dataset(cfg, cfg.data.val_files, processor.tokenizer, processor, int(cfg.cpu.eval_items))
    return HeldOut(cfg, val, reward_fn)


def _plot(metrics_file: Path, out_png: Path, title: str) -> Path | None:
    try:
        from eval.curves import plot_reward_curves
    except ImportError:
        print("[grpo] eval.curves is not available: skipping reward_curves.png")
        return None
    return plot_reward_curves(metrics_file, out_png, title=title)


def run(cfg, progress: bool = True, stages: Sequence[str] = ("sft", "grpo")) -> dict[str, Any]:
    """The whole CPU path (data, tiny model, SFT, GRPO). Returns paths and the final held-out numbers:
    `{"out_dir", "sft", "grpo", "metrics", "png", "wandb_dir", "held_out": {"before": .., "after": ..}, ...}`.
    """
    from omegaconf import OmegaConf

    from recipes.cpu_checkpoint import save_stage, stage_record, write_json_atomic
    from recipes.cpu_logging import RunLogger
    from recipes.sft import run_sft_stage

    out_dir = Path(cfg.cpu.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(cfg.cpu.seed))
    prepare_data(cfg, progress=progress)
    model_dir = prepare_model(cfg)
    sft_dir, grpo_dir = out_dir / "sft", out_dir / "grpo"
    metrics_file = out_dir / "metrics.jsonl"
    result: dict[str, Any] = {
        "out_dir": str(out_dir),
        "model_init": str(model_dir),
        "metrics": str(metrics_file),
    }

    finished = stage_record(grpo_dir) if "grpo" in stages else None
    if finished is not None and stage_record(sft_dir) is not None:
        print(f"[grpo] reusing finished run {grpo_dir}")
        return {**finished.get("result", {}), "reused": True}

    # The CPU path always keeps a W&B run (offline without WANDB_API_KEY) unless `+cpu.wandb=false`.
    wandb_on = bool(cfg.cpu.get("wandb", True))
    logger = RunLogger(
        out_dir,
        project=str(cfg.trainer.project_name),
        name=str(cfg.trainer.experiment_name),
        config=OmegaConf.to_container(cfg, resolve=True),
        use_wandb=wandb_on,
    )
    try:
        sft = run_sft_stage(cfg, model_dir, sft_dir, logger=logger, progress=progress)
        result["sft"] = str(sft_dir)
        result["sft_stats"] = {
            k: v for k, v in sft.items() if k in ("steps", "loss", "seconds", "steps_per_s")
        }
        if "grpo" not in stages:
            return result
        resume_file = out_dir / RESUME_FILE
        if metrics_file.exists() and not resume_file.exists():  # died before its first resume point
            metrics_file.unlink()
        reward_fn = load_reward_fn(cfg)
        held_out = _held_out(cfg, sft_dir, reward_fn)
        grpo = train_grpo(cfg, sft_dir, logger, held_out, progress=progress, resume_file=resume_file)
        evals = grpo["evals"]
        result.update(
            {
                "grpo": str(grpo_dir),
                "wandb_dir": str(logger.wandb_dir) if logger.wandb_dir else None,
                "grpo_steps": grpo["steps"],
                "grpo_train_seconds": grpo["train_seconds"],
                "grpo_steps_per_s": grpo["steps_per_s"],
                "held_out": {"before": evals.get("0"), "after": evals.get(str(grpo["steps"]))},
            }
        )
        if cfg.cpu.get("sft_control", False):
            from recipes.sft import run_sft_control

            result["sft_control"] = run_sft_control(
                cfg, sft_dir, out_dir / "sft_control", grpo["train_seconds"], held_out, logger, progress
            )
        png = _plot(metrics_file, out_dir / "reward_curves.png", f"CPU GRPO: {cfg.trainer.experiment_name}")
        result["png"] = str(png) if png else None
        save_stage(
            grpo["model"],
            grpo["processor"],
            grpo_dir,
            {"stage": "grpo", "init": str(sft_dir), "result": result},
        )
        write_json_atomic(out_dir / RUN_RECORD, result)
        resume_file.unlink(missing_ok=True)
        return result
    finally:
        logger.close()


def compose(overrides: Sequence[str] = (), config_name: str = "imageedit_r1_tiny"):
    """The composed recipe (verl's ppo_trainer + ours) without the Hydra CLI, e.g. for tests and the demo."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    config_dir = str(Path(__file__).resolve().parent / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def hydra_entry(stages: Sequence[str] = ("sft", "grpo")) -> None:
    """`python -m recipes.cpu_grpo --config-name NAME [overrides]` (Hydra CLI; the recipe's `hydra:`
    block keeps the working directory, so outputs go to cpu.out_dir)."""
    import hydra

    @hydra.main(config_path="config", config_name="imageedit_r1_tiny", version_base=None)
    def _main(cfg) -> None:
        import json

        if str(cfg.trainer.get("device", "cpu")) != "cpu":
            raise SystemExit(f"recipes.cpu_grpo runs CPU recipes only (trainer.device={cfg.trainer.device})")
        result = run(cfg, stages=stages)
        print(json.dumps(result, indent=2, default=str))

    _main()


if __name__ == "__main__":
    hydra_entry()
