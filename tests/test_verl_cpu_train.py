"""`make train RECIPE=imageedit_r1_tiny` runs verl's own main_ppo end to end on this CPU: a real local
Ray, the recipes/verl_cpu plugin, our reward and per-component metrics, W&B offline, checkpoints,
resume from the last one into the same experiment (metrics.jsonl and the W&B run keep every earlier
step), and `make export` to a folder the inference backend loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cold_start import cold_start
from wandb_files import read_wandb_history

from recipes import demo
from recipes.verl_cpu.rollout import PROBE_ENV

REPO = Path(__file__).resolve().parents[1]
OURS = (
    "train/reward/score",
    "train/reward/format",
    "train/reward/action",
    "train/reward/subject",
    "train/reward/goal",
)
VERLS = ("critic/score/mean", "timing_s/step", "perf/throughput", "training/rollout_probs_diff_mean")


def make(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """`make ARGS` with this interpreter (nothing installed) in the checkout."""
    run = subprocess.run(
        ["make", "--no-print-directory", f"PYTHON={sys.executable}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"make {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    return run


def records(path: Path) -> list[dict]:
    """The file logger's lines as written (one per logged step and attempt)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def metrics(path: Path) -> dict[int, dict]:
    return {r["step"]: r["data"] for r in records(path)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two invocations of `make train`: steps 1-2 (checkpoint at 2), then on to step 3 (resumed)."""
    from recipes import tiny_assets
    from recipes.launch import compose

    root = tmp_path_factory.mktemp("verl_cpu")
    assets = [
        f"assets.data.dir={root}/data",
        f"assets.model.dir={root}/vlm",
        "assets.data.train=48",
        "assets.data.val=8",
    ]
    built = tiny_assets.ensure(compose("imageedit_r1_tiny", assets), progress=False)
    # a cold-started policy: on a random one the rollout/actor agreement check below would be vacuous
    init = cold_start(built["model"], built["data"] / "sft_train.parquet", root / "cold", steps=150)
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RECIPE", "ARGS", "DRY_RUN")}
    env = {**base, "WANDB_MODE": "offline", "WANDB_DIR": str(root), "HF_HUB_OFFLINE": "1"}
    args = [
        *assets,
        f"actor_rollout_ref.model.path={init}",
        f"trainer.default_local_dir={root}/ckpt",
        "trainer.experiment_name=ci",
        "trainer.save_freq=2",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
        *demo.QUICK_BATCH,
        # the recipe reuses the rollout's log-probs as the old policy's; here the actor recomputes
        # them, so verl measures the rollout against the actor (training/rollout_probs_diff_mean)
        "algorithm.rollout_correction.bypass_mode=false",
    ]
    # Both invocations are one experiment and log to its one file, as outputs/runs/<experiment>/ is.
    log = root / "runs" / "ci" / "metrics.jsonl"
    out = {"log": log}
    for name, steps in (("first", 2), ("second", 3)):
        env_run = {**env, "VERL_FILE_LOGGER_PATH": str(log)}
        if name == "first":  # the rollout server re-scores each step's samples after the weight sync
            env_run[PROBE_ENV] = str(root / "probe.jsonl")
        out[name] = make(
            "train",
            "RECIPE=imageedit_r1_tiny",
            "ARGS=" + " ".join([*args, f"trainer.total_training_steps={steps}"]),
            env=env_run,
        )
        out[f"{name}_records"] = records(log)
        out[f"{name}_metrics"] = metrics(log)
    out["root"] = root
    return out


def test_verls_trainer_logs_its_keys_and_ours_every_step(runs):
    first = runs["first_metrics"]
    assert sorted(first) == [1, 2]
    for step, row in first.items():
        missing = [k for k in (*VERLS, *OURS) if k not in row]
        assert not missing, f"step {step} lacks {missing}"
        assert 0.0 <= row["train/reward/score"] <= 1.0
    # the rollout's log-probs agree with the FSDP actor's recomputation (verl's own measure)
    assert max(row["training/rollout_probs_diff_mean"] for row in first.values()) < 0.01


def test_wandb_offline_run_holds_the_same_curves(runs):
    offline = sorted((runs["root"] / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, f"one W&B offline run folder per invocation: {offline}"
    history = read_wandb_history(offline[0])
    steps = [row for row in history if "train/reward/format" in row]
    assert len(steps) == 2
    assert {k for row in steps for k in row} >= {*OURS, "critic/score/mean"}


def test_the_resumed_invocation_continues_the_same_wandb_run(runs):
    """WANDB_RUN_ID + WANDB_RESUME=allow from the launcher: `wandb sync` of both folders is one run."""
    run_id = (runs["root"] / "ckpt" / "wandb_run_id").read_text().strip()  # the checkpoint folder's
    offline = sorted((runs["root"] / "wandb").glob("offline-run-*"))
    assert [p.name.rsplit("-", 1)[-1] for p in offline] == [run_id, run_id]
    resumed = [row for row in read_wandb_history(offline[1]) if "train/reward/format" in row]
    assert [row["_step"] for row in resumed] == [3]


def test_resume_keeps_every_earlier_step_in_the_experiments_metrics(runs):
    """verl's FileLogger truncates (tracking.py:541); recipes/metrics_log.py appends, one attempt each."""
    from eval.curves import load_metrics

    written = runs["second_records"]
    assert [r["step"] for r in written] == [1, 2, 3]
    attempts = [r["attempt"] for r in written]
    assert attempts[0] == attempts[1] != attempts[2]
    assert [m["step"] for m in load_metrics(runs["log"])] == [1, 2, 3]
    assert written[:2] == runs["first_records"], "the resumed run rewrote the earlier steps"


def test_checkpoint_then_resume_at_step_3(runs):
    ckpt = runs["root"] / "ckpt"
    assert (ckpt / "global_step_2" / "actor" / "fsdp_config.json").is_file()
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    assert [r["step"] for r in runs["second_records"]][2:] == [3], (
        "the second invocation did not resume after step 2"
    )
    assert "Training from scratch" not in runs["second"].stdout + runs["second"].stderr


def test_export_loads_and_generates_in_the_inference_backend(runs):
    from inference.chat import Sampling
    from inference.chat_backends import TransformersBackend

    out = runs["root"] / "export"
    make("export", f"CKPT={runs['root'] / 'ckpt'}", f"OUT={out}", env={**os.environ})
    assert (out / "config.json").is_file()
    backend = TransformersBackend(str(out))
    answers = backend.chat(
        [[{"role": "user", "content": "Decompose: make the square red."}]], Sampling(max_new_tokens=8)
    )
    assert len(answers) == 1 and answers[0].ok, answers


def test_one_grpo_step_moves_the_rollouts_log_probs_towards_the_better_responses(runs):
    """The direction of learning through the real path: step 1's rollouts are scored by our reward,
    the FSDP actor takes one GRPO update, the weights reach the rollout server, and the server's
    log-probs of step 1's responses move towards those that beat their group's mean reward.

    What a policy-gradient step guarantees, to first order, is that its surrogate rises: the
    advantage-weighted change sum_i A_i * dlogp_i is positive, so the above-mean responses gain
    against the below-mean ones. It does not guarantee that every above-mean response gains in
    absolute terms: Adam's first step moves each weight by about lr in its gradient's sign, and the
    format tokens that all responses share are pushed down by the below-mean ones. Two CI runs of
    this fixture measured above/below means of +0.460/-3.464 and -0.087/-2.918 (summed log-prob);
    both are the right direction, the second with every response's probability falling."""
    import re
    import statistics

    import pyarrow.parquet as pq

    from reward_fns.imageedit_r1 import compute_score

    request = re.compile(r'Request: "(.*?)"\n')
    truth = {}
    for row in pq.read_table(runs["root"] / "data" / "train.parquet").to_pylist():
        text = " ".join(m["content"] for m in row["prompt"])
        truth[request.search(text).group(1)] = row["reward_model"]["ground_truth"]
    probe = [json.loads(line) for line in (runs["root"] / "probe.jsonl").read_text().splitlines()]
    first_update = [p for p in probe if p["global_steps"] == probe[0]["global_steps"]]  # step 1's samples
    groups: dict[str, list[tuple[float, float]]] = {}
    for p in first_update:
        gt = truth[request.search(p["prompt"]).group(1)]
        reward = compute_score("synthetic", p["response"], gt)["score"]
        groups.setdefault(p["prompt"], []).append((reward, p["logp_after"] - p["logp_before"]))
    above, below, surrogate = [], [], 0.0
    for members in groups.values():
        rewards = [r for r, _ in members]
        mean, std = statistics.mean(rewards), statistics.stdev(rewards)
        above += [d for r, d in members if r > mean + 1e-9]
        below += [d for r, d in members if r < mean - 1e-9]
        surrogate += sum((r - mean) / (std + 1e-6) * d for r, d in members)  # verl's GRPO advantage
    assert above and below, f"no reward variance in step 1's groups: {groups}"
    up, down = statistics.mean(above), statistics.mean(below)
    seen = f"above-mean responses {up:+.4f} (n={len(above)}), below-mean {down:+.4f} (n={len(below)})"
    assert surrogate > 0, f"the advantage-weighted log-prob change is {surrogate:+.4f}; {seen}"
    assert up > down, f"mean log-prob change: {seen}"
