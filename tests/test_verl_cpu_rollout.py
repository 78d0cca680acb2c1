"""The transformers rollout that verl samples from on a CPU (recipes/verl_cpu/rollout.py), against the
policy's own recomputation, on a cold-started tiny model (a random one hides position bugs)."""

from __future__ import annotations

import asyncio
import io

import pyarrow.parquet as pq
import pytest
import torch
from cold_start import cold_start
from PIL import Image

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def cold_model(tmp_path_factory):
    from recipes import tiny_assets
    from recipes.launch import compose

    root = tmp_path_factory.mktemp("rollout")
    cfg = compose(
        "imageedit_r1_tiny",
        [
            f"assets.data.dir={root}/data",
            f"assets.model.dir={root}/vlm",
            "assets.data.train=48",
            "assets.data.val=4",
        ],
    )
    assets = tiny_assets.ensure(cfg, progress=False)
    model = cold_start(assets["model"], assets["data"] / "sft_train.parquet", root / "cold", steps=20)
    return cfg, model, assets["data"]


def prompts(data_dir, processor, n: int):
    """(prompt token ids, image) as verl's agent loop builds them: chat template + processor."""
    out = []
    for row in pq.read_table(data_dir / "sft_val.parquet").to_pylist()[:n]:
        text = row["messages"][0]["content"].replace("<image>", "")
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        image = Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB")
        rendered = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        ids = processor(text=[rendered], images=[image], return_tensors="pt")["input_ids"][0].tolist()
        out.append((ids, image))
    return out


def recomputed_log_probs(server, prompt_ids, image, response, mrope: bool = True):
    """What the trainer computes for the same tokens: one forward over prompt + response (with
    `mrope=False`, the 1-D positions transformers falls back to without mm_token_type_ids)."""
    ids = torch.tensor([prompt_ids + response])
    vision = server.processor.image_processor(images=[image], return_tensors="pt")
    extra = {"mm_token_type_ids": (ids == server.image_token_id).long()} if mrope else {}
    logits = server.model(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=vision["pixel_values"],
        image_grid_thw=vision["image_grid_thw"],
        **extra,
    ).logits[0, len(prompt_ids) - 1 : -1]
    logits[:, server.suppressed] = float("-inf")
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def test_rollout_log_probs_match_the_policy_and_requests_are_batched(cold_model):
    from recipes.verl_cpu.rollout import HFRolloutServer

    cfg, model_dir, data_dir = cold_model
    model_cfg = cfg.actor_rollout_ref.model.copy()
    model_cfg.path = str(model_dir)
    server = HFRolloutServer(cfg.actor_rollout_ref.rollout, model_cfg)
    requests = prompts(data_dir, server.processor, 4)

    async def burst():
        return await asyncio.gather(
            *[
                server.generate(
                    ids, {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}, f"r{i}", [im]
                )
                for i, (ids, im) in enumerate(requests)
            ]
        )

    torch.manual_seed(0)
    outputs = asyncio.run(burst())
    assert server.generation_batches() == 1  # one burst of requests, one generate call
    diffs, diffs_1d = [], []
    with torch.no_grad():
        for (ids, image), out in zip(requests, outputs, strict=True):
            assert 0 < len(out.token_ids) == len(out.log_probs) <= cfg.data.max_response_length
            assert not set(out.token_ids) & set(server.suppressed)
            sampled = torch.tensor(out.log_probs)
            diffs.append((recomputed_log_probs(server, ids, image, list(out.token_ids)) - sampled).abs())
            wrong = recomputed_log_probs(server, ids, image, list(out.token_ids), mrope=False)
            diffs_1d.append((wrong - sampled).abs())
    diff, diff_1d = float(torch.cat(diffs).mean()), float(torch.cat(diffs_1d).mean())
    assert diff < 1e-3, f"mean |rollout - recomputed| log-prob {diff:.2e}"
    # the test has teeth: on this cold-started model 1-D positions (the bug) differ far more
    assert diff_1d > 10 * diff, f"1-D positions differ by {diff_1d:.2e}, 3-D by {diff:.2e}"


def test_weight_update_takes_the_trainers_names(cold_model):
    from transformers import AutoModelForImageTextToText

    from recipes.verl_cpu.rollout import HFRolloutServer

    cfg, model_dir, _ = cold_model
    model_cfg = cfg.actor_rollout_ref.model.copy()
    model_cfg.path = str(model_dir)
    server = HFRolloutServer(cfg.actor_rollout_ref.rollout, model_cfg)
    # verl's FSDP engine sends checkpoint-format names (convert_weight_keys): model.layers..., visual...
    source = AutoModelForImageTextToText.from_pretrained(model_dir)
    named = [
        (name.replace("model.language_model.", "model.").replace("model.visual.", "visual."), t * 0 + 1)
        for name, t in source.state_dict().items()
    ]
    assert asyncio.run(server.update_weights(named)) == len(named)
    assert all(bool((p == 1).all()) for p in server.model.parameters())
    with pytest.raises(KeyError, match="does not have"):
        asyncio.run(server.update_weights([("no.such.weight", torch.zeros(1))]))
