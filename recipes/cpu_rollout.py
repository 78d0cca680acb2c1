"""Policy-side tensors of the CPU GRPO path: prompt encoding, rollouts with transformers `generate`,
response masks and log-probabilities, on a tiny Qwen2.5-VL (no copy of verl's math: the masks,
log-probs and entropies come from `verl.utils.torch_functional`).

Why these details (measured, see recipes/README.md):
- the vision special tokens are suppressed in `generate` and masked identically when log-probs are
  recomputed, otherwise a sampled `<|image_pad|>` crashes the next forward;
- the prompt+response forward passes `mm_token_type_ids` (the processor's, extended with zeros over
  the response), otherwise transformers silently falls back to 1-D positions instead of mrope and
  recomputed log-probs drift from the sampler's;
- `generate` pads after EOS: the response mask runs up to and including the first EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from inference.tiny import VISION_TOKENS


@dataclass
class EncodedPrompts:
    """Left-padded chat prompts with their vision inputs, one row per sequence to sample."""

    inputs: dict[
        str, torch.Tensor
    ]  # input_ids, attention_mask, mm_token_type_ids, pixel_values, image_grid_thw

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs["input_ids"]

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class Rollout:
    """Sampled responses (right-padded to a fixed length) with the prompts they continue."""

    prompts: EncodedPrompts
    responses: torch.Tensor  # (B, R) token ids
    response_mask: torch.Tensor  # (B, R) 1 up to and including the first EOS


def images_of_messages(messages: Sequence[dict[str, Any]]) -> list[Image.Image]:
    """The PIL images of a chat in content-parts form, in order (verl's RLHFDataset puts them there)."""
    images = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            continue
        for part in content:
            if part.get("type") != "image":
                continue
            image = part.get("image")
            if not isinstance(image, Image.Image):
                raise TypeError(
                    f"image part holds {type(image).__name__}, expected a PIL image: {part!r:.200}"
                )
            images.append(image.convert("RGB"))
    return images


def strip_images(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat with image parts reduced to `{"type": "image"}` (the template needs only the slot)."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": "image"} if p.get("type") == "image" else dict(p) for p in content]
        out.append({**message, "content": content})
    return out


def encode_prompts(processor, chats: Sequence[Sequence[dict[str, Any]]], repeat: int = 1) -> EncodedPrompts:
    """Chat template + processor over `chats`, each repeated `repeat` times in adjacent rows (a GRPO group).

    Images go to the processor as they are (its own resize), exactly as the inference pipeline does.
    """
    texts, images = [], []
    for chat in chats:
        text = processor.apply_chat_template(strip_images(chat), add_generation_prompt=True, tokenize=False)
        pics = images_of_messages(chat)
        for _ in range(repeat):
            texts.append(text)
            images.extend(pics)
    batch = processor(
        text=texts,
        images=images or None,
        padding=True,
        padding_side="left",
        return_tensors="pt",
        return_mm_token_type_ids=True,
    )
    return EncodedPrompts(inputs={k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision special tokens a response must never contain."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


def eos_token_ids(model) -> list[int]:
    eos = model.generation_config.eos_token_id
    return list(eos) if isinstance(eos, (list, tuple)) else [eos]


@torch.no_grad()
def sample(
    model,
    tokenizer,
    prompts: EncodedPrompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
) -> Rollout:
    """One response per prompt row, right-padded to `max_new_tokens`, with its mask to the first EOS."""
    from verl.utils.torch_functional import get_response_mask

    eos = eos_token_ids(model)
    pad_id = tokenizer.pad_token_id
    kwargs: dict[str, Any] = (
        {"do_sample": False}
        if greedy
        else {
            "do_sample": True,
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k if top_k > 0 else None,
        }
    )
    out = model.generate(
        **prompts.inputs,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad_id,
        suppress_tokens=vision_token_ids(tokenizer),
        **kwargs,
    )
    responses = out[:, prompts.input_ids.shape[1] :]
    if responses.shape[1] < max_new_tokens:
        pad = responses.new_full((responses.shape[0], max_new_tokens - responses.shape[1]), pad_id)
        responses = torch.cat([responses, pad], dim=1)
    mask = get_response_mask(responses, eos_token=eos, dtype=torch.int64)
    return Rollout(prompts=prompts, responses=responses, response_mask=mask)


def slice_rows(rollout: Rollout, rows: slice) -> Rollout:
    """A contiguous block of rows of a rollout (its images are cut to match the rows)."""
    inputs = dict(rollout.prompts.inputs)
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        # every prompt holds the same number of images (checked at encoding by the processor counts)
        per_row = grid.shape[0] // len(rollout.prompts)
        patches = grid.prod(dim=1)
        img_start, img_stop = rows.start * per_row, rows.stop * per_row
        patch_start = int(patches[:img_start].sum())
        patch_stop = int(patches[:img_stop].sum())
        inputs["image_grid_thw"] = grid[img_start:img_stop]
        inputs["pixel_values"] = inputs["pixel_values"][patch_start:patch_stop]
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        if key in inputs:
            inputs[key] = inputs[key][rows]
    return Rollout(
        prompts=EncodedPrompts(inputs=inputs),
        responses=rollout.responses[rows],
        response_mask=rollout.response_mask[rows],
    )


def response_logits(model, rollout: Rollout, temperature: float = 1.0) -> torch.Tensor:
    """Logits predicting each response token (B, R, V), temperature-scaled, vision tokens masked out."""
    p = rollout.prompts.inputs
    input_ids = torch.cat([p["input_ids"], rollout.responses], dim=1)
    attention_mask = torch.cat(
        [p["attention_mask"], rollout.response_mask.to(p["attention_mask"].dtype)], dim=1
    )
    forward = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "mm_token_type_ids" in p:
        zeros = torch.zeros_like(rollout.responses, dtype=p["mm_token_type_ids"].dtype)
        forward["mm_token_type_ids"] = torch.cat([p["mm_token_type_ids"], zeros], dim=1)
    for key in ("pixel_values", "image_grid_thw"):
        if key in p:
            forward[key] = p[key]
    # only the positions that predict response tokens: the LM head over the prompt is wasted work
    keep = rollout.responses.shape[1] + 1
    logits = model(**forward, use_cache=False, logits_to_keep=keep).logits[:, :-1, :]
    if temperature != 1.0:
        logits = logits / temperature
    return logits


def _mask_vision(logits: torch.Tensor, vision_ids: Sequence[int]) -> torch.Tensor:
    if not vision_ids:
        return logits
    masked = logits.clone()
    masked[..., list(vision_ids)] = float("-inf")
    return masked


def log_probs(
    model, tokenizer, rollout: Rollout, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (B, R) of the sampled responses (and entropies) under `model`."""
    from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

    logits = _mask_vision(response_logits(model, rollout, temperature), vision_token_ids(tokenizer))
    logp = logprobs_from_logits(logits, rollout.responses)
    entropy = None
    if with_entropy:
        # -inf logits would give nan entropy terms (0 * inf): the suppressed tokens carry no mass anyway
        entropy = entropy_from_logits(torch.nan_to_num(logits, neginf=-1e4))
    return logp, entropy


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response texts as verl decodes them for the reward (valid tokens, special tokens skipped)."""
    lengths = rollout.response_mask.sum(dim=1).tolist()
    return [
        tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
        for row, n in zip(rollout.responses, lengths, strict=True)
    ]
