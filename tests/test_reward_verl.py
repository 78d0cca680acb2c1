"""The reward inside verl 0.9.1's own machinery on CPU: its packaged config composed with our keys,
its loader, its reward loop worker and naive reward manager, and its replay buffer hook that puts the
per-component means into the training metrics."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from tensordict import TensorDict

from reward_fns.components import REWARD_COMPONENTS, SCORE_KEY, train_metric

REPO = Path(__file__).resolve().parents[1]
REWARD_PATH = str(REPO / "reward_fns" / "imageedit_r1.py")
SAMPLER_PATH = str(REPO / "reward_fns" / "replay_buffer.py")
ZERO_VARIANCE_METRIC = "train/grpo/zero_variance_group_fraction"
KEYS = [SCORE_KEY, *REWARD_COMPONENTS]
GT = json.dumps({"actions": ["recolor"], "subjects": ["coat", "hair"], "goals": ["scarlet red"]})
RESPONSES = [
    '<think>red coat</think>\n<action>["recolor"]</action>\n<subjects>["coat", "hair"]</subjects>\n'
    '<goals>["scarlet red"]</goals>',
    '<think></think><action>["recolor"]</action><subjects>["coat"]</subjects><goals>["scarlet"]</goals>',
    "<action>recolor</action> I think the coat",
]


def compose_verl(overrides: list[str]):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def reward_overrides(*extra: str) -> list[str]:
    return [
        f"reward.custom_reward_function.path={REWARD_PATH}",
        "reward.custom_reward_function.name=compute_score",
        *extra,
    ]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from inference.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(RESPONSES).save_pretrained(out)
    return out


def test_verl_loader_returns_our_function_with_reward_kwargs():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = compose_verl(
        reward_overrides(
            "+reward.custom_reward_function.reward_kwargs.mode=exact",
            "+reward.custom_reward_function.reward_kwargs.weights.goal=3.0",
        )
    )
    fn = get_custom_reward_fn(config)
    assert fn.func.__name__ == "_call_with_kwargs" and fn.args[0].__name__ == "compute_score"
    result = fn(data_source="synthetic", solution_str=RESPONSES[1], ground_truth=GT, extra_info={})
    assert list(result) == KEYS
    # action 1, subject 2/3, goal 0, format 1 with goal weighted 3: (1 + 1 + 2/3 + 0) / 6
    assert result[SCORE_KEY] == pytest.approx((1 + 1 + 2 / 3) / 6)


def test_top_level_custom_reward_function_key_is_ignored_by_verl():
    """The trap: the legacy top-level key composes fine but verl's loader never reads it."""
    from verl.trainer.ppo.reward import get_custom_reward_fn

    config = compose_verl([f"custom_reward_function.path={REWARD_PATH}"])
    assert get_custom_reward_fn(config) is None


def _batch(tokenizer, responses: list[str]):
    from verl import DataProto

    prompt = tokenizer("<|im_start|>user\nedit<|im_end|>\n", return_tensors="pt")["input_ids"][0]
    encoded = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(map(len, encoded))
    pad = tokenizer.pad_token_id
    response_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded])
    response_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded])
    prompts = prompt.repeat(len(responses), 1)
    attention_mask = torch.cat([torch.ones_like(prompts), response_mask], dim=1)
    n = len(responses)
    return DataProto(
        batch=TensorDict(
            {"prompts": prompts, "responses": response_ids, "attention_mask": attention_mask}, batch_size=n
        ),
        non_tensor_batch={
            "data_source": np.array(["synthetic"] * n, dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": GT}] * n, dtype=object),
            "extra_info": np.array([{"index": i} for i in range(n)], dtype=object),
        },
    )


def test_batch_through_verl_reward_loop_worker_and_naive_manager(tokenizer_dir):
    from transformers import AutoTokenizer
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

    from reward_fns.imageedit_r1 import compute_score

    config = compose_verl(reward_overrides(f"actor_rollout_ref.model.path={tokenizer_dir}"))
    worker = RewardLoopWorker(config)  # the class verl wraps in ray.remote, run in-process here
    assert isinstance(worker.reward_manager, NaiveRewardManager)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = _batch(tokenizer, RESPONSES)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))  # verl runs it on this loop

    expected = [compute_score("synthetic", r, GT) for r in RESPONSES]
    assert [o["reward_score"] for o in outputs] == pytest.approx([e[SCORE_KEY] for e in expected])
    for out, exp in zip(outputs, expected, strict=True):
        assert list(out["reward_extra_info"]) == KEYS
        assert out["reward_extra_info"] == pytest.approx(exp)
    assert expected[0][SCORE_KEY] == 1.0 and 0 < expected[1][SCORE_KEY] < 1 and expected[2]["format"] == 0.0

    rm_scores = NaiveRewardManager.assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    assert rm_scores.sum(dim=1).tolist() == pytest.approx([e[SCORE_KEY] for e in expected])


def test_zero_variance_group_fraction_groups_by_prompt_uid():
    from reward_fns.replay_buffer import zero_variance_group_fraction

    keys = ["a_0_0", "a_1_0", "b_0_0", "b_1_0", "c_0_0", "d_0_0", "d_1_0"]
    scores = [0.5, 0.5, 1.0, 0.0, 0.3, None, 0.2]
    infos = [{"reward_extra_info": {} if s is None else {"score": s}} for s in scores]
    # a: flat; b: varies; c: one rollout (no group); d: one scored rollout (no group)
    assert zero_variance_group_fraction(keys, infos) == {ZERO_VARIANCE_METRIC: 0.5}
    assert zero_variance_group_fraction([], []) == {}


def test_reward_component_means_skip_missing_values():
    from reward_fns.replay_buffer import reward_component_means

    infos = [
        {"reward_extra_info": {"score": 1.0, "format": 1.0, "goal": 0.5}},
        SimpleNamespace(data={"reward_extra_info": {"score": 0.0, "format": 0.0}}),
        {"other": 1},
    ]
    means = reward_component_means(infos)
    assert means == {train_metric("score"): 0.5, train_metric("format"): 0.5, train_metric("goal"): 0.5}


@pytest.fixture(scope="module")
def transfer_queue():
    import ray
    import transfer_queue as tq

    # Logical CPUs: the TQ controller and its two storage units each hold one (2 would hang).
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    tq.init()
    yield tq
    tq.close()
    ray.shutdown()


def _put_group(tq, uid: str, rewards: list[dict[str, float]], global_steps: int = 1) -> None:
    """One finished GRPO group as verl's agent loop writes it: trajectories + the prompt's status."""
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    keys = [f"{uid}_{i}_0" for i in range(len(rewards))]
    fields = [
        {
            "responses": torch.tensor([1, 2, 3]),
            "extra_fields": {"reward_extra_info": r, "min_global_steps": 1},
        }
        for r in rewards
    ]
    tags = [{"status": "success", "global_steps": global_steps} for _ in rewards]
    tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(fields), tags=tags)
    tq.kv_put(key=uid, partition_id="train", tag={"is_prompt": True, "status": "finished", "global_steps": 1})


@pytest.mark.parametrize(
    ("trainer_mode", "class_name"),
    [("sync", "RewardComponentReplayBuffer"), ("colocate_async", "RewardComponentReplayBufferAsync")],
)
def test_replay_buffer_reports_reward_component_means_as_training_metrics(
    transfer_queue, trainer_mode, class_name
):
    """verl's trainer builds the sampler from our config keys with its own code, and the metrics the
    sample returns are what `_step_once` merges into the step's training metrics."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    config = compose_verl(
        [
            f"trainer.v1.sampler.custom_sampler.path={SAMPLER_PATH}",
            f"trainer.v1.sampler.custom_sampler.name={class_name}",
        ]
    )
    stub = SimpleNamespace(config=config, trainer_mode=trainer_mode, _add_prompts_to_generate=lambda n: None)
    buffer = PPOTrainer._build_replay_buffer(stub)
    assert type(buffer).__name__ == class_name

    full = dict.fromkeys(KEYS, 1.0)
    none = dict.fromkeys(KEYS, 0.0)
    half = {SCORE_KEY: 0.5, "format": 1.0, "action": 0.5, "subject": 0.5, "goal": 0.0}
    prefix = trainer_mode.replace("_", "")  # verl splits trajectory keys `{uid}_{session}_{i}` on "_"
    _put_group(transfer_queue, f"{prefix}0", [full, none])
    _put_group(transfer_queue, f"{prefix}1", [half, half])
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=2)
    assert len(batch.keys) == 4
    assert metrics[train_metric(SCORE_KEY)] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert metrics[train_metric("format")] == pytest.approx(0.75)
    assert metrics[train_metric("action")] == pytest.approx(0.5)
    assert metrics[train_metric("goal")] == pytest.approx(0.25)
    assert set(metrics) >= {train_metric(k) for k in KEYS}
    # group 0 scores 1 and 0 (signal), group 1 scores 0.5 twice (no signal)
    assert metrics[ZERO_VARIANCE_METRIC] == pytest.approx(0.5)
