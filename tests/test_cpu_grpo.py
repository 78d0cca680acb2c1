"""The CPU GRPO path end to end at toy sizes (mechanics, not learning: see test_cpu_grpo_slow.py).

One module-scoped run: synthetic data -> tiny Qwen2.5-VL -> SFT -> GRPO, with a real W&B offline run.
"""

from __future__ import annotations

import copy
import json
import shutil
import time

import pytest
import torch

from recipes.cpu_grpo import compose, run
from recipes.cpu_logging import read_wandb_history
from reward_fns.components import REWARD_COMPONENTS, SCORE_KEY, train_metric

STEPS = 2


def toy_overrides(tmp) -> list[str]:
    return [
        f"cpu.data.dir={tmp}/data",
        "cpu.data.train=24",
        "cpu.data.val=6",
        f"cpu.model.dir={tmp}/model",
        "cpu.model.text_hidden=64",
        f"cpu.out_dir={tmp}/run",
        "cpu.sft.steps=3",
        "cpu.sft.batch_size=4",
        "cpu.eval_every=1",
        "cpu.eval_items=4",
        f"trainer.total_training_steps={STEPS}",
        "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.rollout.n=4",
        "data.max_response_length=12",
    ]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cpu_grpo")
    cfg = compose(toy_overrides(tmp))
    result = run(cfg, progress=False)
    return cfg, result


def test_run_returns_the_documented_paths(toy_run):
    cfg, result = toy_run
    for key in ("sft", "grpo", "metrics", "png", "wandb_dir"):
        assert result[key], key
    assert result["grpo_steps"] == STEPS
    for when in ("before", "after"):
        numbers = result["held_out"][when]
        for mode in ("greedy", "sampled"):
            for key in (SCORE_KEY, *REWARD_COMPONENTS):
                assert 0.0 <= numbers[f"val/reward/{mode}/{key}"] <= 1.0


def test_stage_folders_load_with_the_auto_classes(toy_run):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    _, result = toy_run
    for stage in ("sft", "grpo"):
        processor = AutoProcessor.from_pretrained(result[stage])
        model = AutoModelForImageTextToText.from_pretrained(result[stage])
        assert processor.tokenizer.chat_template and model.config.model_type == "qwen2_5_vl"


def test_grpo_changed_the_weights(toy_run):
    from recipes.cpu_checkpoint import load_policy

    _, result = toy_run
    sft, _ = load_policy(result["sft"])
    grpo, _ = load_policy(result["grpo"])
    diffs = [(a - b).abs().max().item() for a, b in zip(sft.parameters(), grpo.parameters(), strict=True)]
    assert max(diffs) > 0


def test_metrics_jsonl_has_every_step_with_reward_components(toy_run):
    from eval.curves import load_metrics

    _, result = toy_run
    rows = load_metrics(result["metrics"])
    assert [r["step"] for r in rows] == list(range(0, STEPS + 1))  # step 0 = held-out before GRPO
    for row in rows[1:]:
        for key in (SCORE_KEY, *REWARD_COMPONENTS):
            assert 0.0 <= row[train_metric(key)] <= 1.0
        for key in (
            "actor/kl_loss",
            "actor/entropy",
            "actor/pg_loss",
            "response_length/mean",
            "timing_s/gen",
        ):
            assert key in row, key
        assert row["response_length/max"] <= 12
    assert "val/reward/greedy/score" in rows[0]


def test_wandb_offline_run_recorded_the_same_rewards(toy_run):
    from eval.curves import load_metrics

    _, result = toy_run
    wandb_dir = result["wandb_dir"]
    assert "offline-run-" in wandb_dir
    history = [h for h in read_wandb_history(wandb_dir) if "train/step" in h and train_metric(SCORE_KEY) in h]
    logged = {h["train/step"]: h[train_metric(SCORE_KEY)] for h in history}
    expected = {
        r["step"]: r[train_metric(SCORE_KEY)] for r in load_metrics(result["metrics"]) if r["step"] > 0
    }
    assert logged == pytest.approx(expected)


def test_reward_curves_png_written(toy_run):
    from pathlib import Path

    _, result = toy_run
    png = Path(result["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_reuses_finished_stages(toy_run):
    cfg, result = toy_run
    start = time.perf_counter()
    again = run(cfg, progress=False)
    assert again["reused"] and again["grpo"] == result["grpo"]
    assert time.perf_counter() - start < 30
    record = json.loads((__import__("pathlib").Path(result["out_dir"]) / "run.json").read_text())
    assert record["grpo"] == result["grpo"]


def test_sampled_log_probs_match_recomputed_ones(tiny_vlm_dir):
    """mrope positions (mm_token_type_ids) and vision-token masking: generate's own scores and the
    prompt+response forward agree, so old log-probs are exactly on-policy."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from verl.utils.torch_functional import get_response_mask

    from inference.prompts import decomposition_prompt
    from recipes.cpu_rollout import Rollout, encode_prompts, eos_token_ids, log_probs, vision_token_ids

    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir).eval()
    chats = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", (64, 64), c)},
                    {"type": "text", "text": decomposition_prompt(r)},
                ],
            }
        ]
        for c, r in (
            ((200, 0, 0), "make the red circle blue"),
            ((0, 90, 0), "remove the square and add a star"),
        )
    ]
    prompts = encode_prompts(processor, chats, repeat=3)
    torch.manual_seed(0)
    out = model.generate(
        **prompts.inputs,
        max_new_tokens=10,
        do_sample=True,
        top_k=None,
        eos_token_id=eos_token_ids(model),
        pad_token_id=processor.tokenizer.pad_token_id,
        suppress_tokens=vision_token_ids(processor.tokenizer),
        output_scores=True,
        return_dict_in_generate=True,
    )
    responses = out.sequences[:, prompts.input_ids.shape[1] :]
    mask = get_response_mask(responses, eos_token=eos_token_ids(model))
    expected = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, responses[..., None]).squeeze(-1)
    got, _ = log_probs(model, processor.tokenizer, Rollout(prompts, responses, mask))
    assert (got - expected)[mask.bool()].abs().max() < 1e-4
    assert not torch.isin(responses, torch.tensor(vision_token_ids(processor.tokenizer))).any()


def test_grpo_stage_killed_midway_resumes_from_its_last_resume_point(toy_run, tmp_path, monkeypatch, capsys):
    from eval.curves import load_metrics
    from recipes import cpu_grpo

    toy_cfg, toy_result = toy_run
    shutil.copytree(toy_result["sft"], tmp_path / "run" / "sft")  # a finished SFT stage is reused
    cfg = compose(
        [
            *toy_overrides(tmp_path),
            f"cpu.data.dir={toy_cfg.cpu.data.dir}",
            f"cpu.model.dir={toy_cfg.cpu.model.dir}",
            "trainer.save_freq=1",
            "cpu.eval_items=0",
            "+cpu.wandb=false",
        ]
    )
    real_step = cpu_grpo.GRPOTrainer.step

    def dies_at_step_2(self, batch, step):
        if step == 2:
            raise KeyboardInterrupt("killed")
        return real_step(self, batch, step)

    monkeypatch.setattr(cpu_grpo.GRPOTrainer, "step", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, progress=False)
    resume_file = tmp_path / "run" / cpu_grpo.RESUME_FILE
    assert resume_file.is_file()
    monkeypatch.setattr(cpu_grpo.GRPOTrainer, "step", real_step)
    result = run(cfg, progress=False)
    assert "resuming after step 1" in capsys.readouterr().out
    assert [r["step"] for r in load_metrics(result["metrics"])] == [1, 2]
    assert not resume_file.exists() and result["grpo_steps"] == STEPS


def test_skipping_the_on_policy_old_log_prob_forward_changes_nothing(toy_run):
    """With one epoch over one mini-batch, old log-probs = current ones: skipping their forward gives
    the same update as recomputing them (verl's policy loss sees ratio 1 either way)."""
    from omegaconf import open_dict

    from recipes import cpu_grpo
    from recipes.cpu_checkpoint import load_policy

    toy_cfg, result = toy_run
    weights = []
    for recompute in (False, True):
        cfg = copy.deepcopy(toy_cfg)
        with open_dict(cfg):
            cfg.cpu.recompute_old_log_prob = recompute
        model, processor = load_policy(result["sft"])
        trainer = cpu_grpo.GRPOTrainer(cfg, model, processor, cpu_grpo.load_reward_fn(cfg))
        assert trainer.on_policy is not recompute
        dataset = cpu_grpo.rl_dataset(cfg, cfg.data.train_files, processor.tokenizer, processor)
        metrics = trainer.step(next(iter(cpu_grpo.rl_dataloader(cfg, dataset))), step=1)
        assert metrics["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-6)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
