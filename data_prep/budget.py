"""The image budget, set once: how many pixels an image may keep so its prompt fits max_prompt_length.

Qwen2.5-VL turns an image into (h/14)(w/14)/4 tokens after resizing it with `smart_resize`, first in
qwen_vl_utils (`fetch_image`, which verl's dataset calls, up to 16,384 tokens per image) and then in
the processor (bounded by its max_pixels). Nothing else caps them: a 3024x4032 phone photo is 15,552
tokens, far over the paper recipe's max_prompt_length 2048, and verl's overlong filter drops such rows
with only a printed count. So:

- the model group of a recipe holds `image_budget.max_pixels` (+ `text_tokens`, the room left for the
  prompt text) and passes it to the processor as `data.mm_processor_kwargs.{min_pixels,max_pixels}`
  (the processor honours max_pixels only with min_pixels beside it);
- `data_prep.build rl --max-pixels` resizes every image to it (`fit_image`), and reports rows still over;
- `make doctor` (recipes/doctor.py) checks the recipe's numbers (`recipe_budget_problem`) and counts the
  rows of the training parquet that verl's filter would drop (`overlong_rows`), exactly as verl counts.

The arithmetic calls the real functions: qwen_vl_utils' `smart_resize` and the processor's own
`get_number_of_image_patches` (transformers' Qwen2VLImageProcessor, itself on `smart_resize`).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: Qwen2.5-VL: 14-pixel ViT patches, 2x2 patches merged into one token (Qwen3-VL: 16, 2).
PATCH_SIZE = 14
MERGE_SIZE = 2
#: The paper recipe's numbers (recipes/config/model/qwen2_5_vl_7b.yaml, imageedit_r1_qwen2_5_vl_7b.yaml):
#: max_prompt_length 2048 minus 512 tokens kept for the text = 1,536 image tokens = 1,204,224 pixels.
PAPER_MAX_PROMPT_LENGTH = 2048
PAPER_TEXT_TOKENS = 512


def _qwen_vl_smart_resize(
    height: int, width: int, factor: int, max_pixels: int | None = None
) -> tuple[int, int]:
    try:
        from qwen_vl_utils.vision_process import smart_resize
    except ImportError as exc:  # verl's verl-core extra brings it
        raise ImportError("the image budget needs qwen_vl_utils: pip install 'verl[verl-core]'") from exc
    return smart_resize(height, width, factor=factor, max_pixels=max_pixels)


def max_pixels_for(
    max_prompt_length: int,
    text_tokens: int,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
    images_per_prompt: int = 1,
) -> int:
    """The largest max_pixels whose images leave `text_tokens` of `max_prompt_length` free: smart_resize
    keeps h x w <= max_pixels on multiples of patch x merge, one token per (patch x merge)^2 pixels."""
    if max_prompt_length <= text_tokens:
        raise ValueError(
            f"max_prompt_length={max_prompt_length} leaves no room for images after text_tokens={text_tokens}"
        )
    tokens = (max_prompt_length - text_tokens) // images_per_prompt
    return tokens * (patch_size * merge_size) ** 2


PAPER_MAX_PIXELS = max_pixels_for(PAPER_MAX_PROMPT_LENGTH, PAPER_TEXT_TOKENS)


def image_tokens(
    height: int,
    width: int,
    max_pixels: int | None = None,
    patch_size: int = PATCH_SIZE,
    merge_size: int = MERGE_SIZE,
) -> int:
    """Tokens of one image after qwen_vl_utils' resize (its own bound) and a processor bound of max_pixels."""
    factor = patch_size * merge_size
    h, w = _qwen_vl_smart_resize(height, width, factor)
    if max_pixels is not None:
        h, w = _qwen_vl_smart_resize(h, w, factor, max_pixels=max_pixels)
    return (h // patch_size) * (w // patch_size) // merge_size**2


def fit_image(image: Any, max_pixels: int, patch_size: int = PATCH_SIZE, merge_size: int = MERGE_SIZE) -> Any:
    """`image` (PIL) resized to what smart_resize keeps under max_pixels, so qwen_vl_utils and the
    processor leave it as it is; images already within max_pixels are returned unchanged."""
    from PIL import Image

    width, height = image.size
    if width * height <= max_pixels:
        return image
    h, w = _qwen_vl_smart_resize(height, width, patch_size * merge_size, max_pixels=max_pixels)
    return image.resize((w, h), Image.Resampling.BICUBIC)


# --- the recipe's budget ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageBudget:
    """What a composed recipe says about image tokens."""

    max_prompt_length: int
    max_pixels: int | None  # data.mm_processor_kwargs.max_pixels (None: the processor's default)
    text_tokens: int | None  # image_budget.text_tokens
    patch_size: int  # data.image_patch_size (qwen_vl_utils' resize factor / 2)
    merge_size: int = MERGE_SIZE

    @property
    def image_tokens_max(self) -> int | None:
        if self.max_pixels is None:
            return None
        return self.max_pixels // (self.patch_size * self.merge_size) ** 2


def recipe_budget(config: Any) -> ImageBudget:
    """The budget of a composed verl config (OmegaConf)."""
    from omegaconf import OmegaConf

    def sel(key: str) -> Any:
        return OmegaConf.select(config, key)

    kwargs = sel("data.mm_processor_kwargs") or {}
    max_pixels = kwargs.get("max_pixels") if isinstance(kwargs, Mapping) else None
    return ImageBudget(
        max_prompt_length=int(sel("data.max_prompt_length")),
        max_pixels=None if max_pixels is None else int(max_pixels),
        text_tokens=None if sel("image_budget.text_tokens") is None else int(sel("image_budget.text_tokens")),
        patch_size=int(sel("data.image_patch_size") or PATCH_SIZE),
    )


def recipe_budget_problem(config: Any) -> str | None:
    """Why the recipe's image bound cannot hold its max_prompt_length (None when it can)."""
    from omegaconf import OmegaConf

    b = recipe_budget(config)
    if b.max_pixels is None:
        return None
    if OmegaConf.select(config, "data.mm_processor_kwargs.min_pixels") is None:
        return (
            "data.mm_processor_kwargs has max_pixels without min_pixels: the processor then ignores it "
            "(image_processing_qwen2_vl.py:126-133); set both"
        )
    if b.text_tokens is None:
        return None
    room = b.max_prompt_length - b.text_tokens
    if b.image_tokens_max > room:
        need = max_pixels_for(b.max_prompt_length, b.text_tokens, b.patch_size, b.merge_size)
        return (
            f"data.mm_processor_kwargs.max_pixels={b.max_pixels} allows {b.image_tokens_max} image tokens but "
            f"data.max_prompt_length={b.max_prompt_length} - image_budget.text_tokens={b.text_tokens} leaves "
            f"{room}: set image_budget.max_pixels={need} (and rebuild the data with --max-pixels {need})"
        )
    return None


# --- what verl's overlong filter drops -------------------------------------------------------------


@dataclass
class LengthReport:
    """Prompt lengths of a parquet as verl's RLHFDataset.maybe_filter_out_long_prompts measures them."""

    rows: int = 0
    overlong: int = 0
    longest: int = 0
    examples: list[tuple[int, int]] | None = None  # (row, length) of the first few overlong rows

    def summary(self, limit: int) -> str:
        shown = ", ".join(f"row {r}: {n}" for r, n in (self.examples or []))
        return f"{self.overlong} of {self.rows} rows over {limit} tokens (longest {self.longest}; {shown})"


def _image_size(item: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) from the image header only (PIL opens lazily; no pixel decoding)."""
    from PIL import Image

    image = item.get("image")
    if image is None:
        data = item.get("bytes")
        image = Image.open(io.BytesIO(data)) if data is not None else Image.open(os.fspath(item["path"]))
    elif isinstance(image, str | os.PathLike):
        image = Image.open(os.fspath(image).removeprefix("file://"))
    width, height = image.size
    return height, width


def prompt_length(doc: Mapping[str, Any], processor: Any, data_config: Any) -> int:
    """The token count verl's filter compares with max_prompt_length (rl_dataset.py:206-240), from the
    chat template text and each image's header: verl's own `_build_messages` builds the messages, the
    text is tokenized as verl does, and each image placeholder counts the tokens its image becomes
    (qwen_vl_utils' resize with data.image_patch_size, then the processor's with mm_processor_kwargs)."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    def sel(key: str, default: Any) -> Any:
        value = OmegaConf.select(data_config, key)
        return default if value is None else value

    view = SimpleNamespace(
        image_key=sel("image_key", "images"),
        video_key=sel("video_key", "videos"),
        audio_key=sel("audio_key", "audios"),
        processor=processor,
    )
    doc = {k: (list(v) if hasattr(v, "tolist") else v) for k, v in doc.items()}
    messages = RLHFDataset._build_messages(view, dict(doc), key=sel("prompt_key", "prompt"))
    template_kwargs = OmegaConf.to_container(
        sel("apply_chat_template_kwargs", OmegaConf.create({})), resolve=True
    )
    raw = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **template_kwargs
    )
    ids = processor.tokenizer(text=raw, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    images = [
        item
        for m in messages
        if isinstance(m.get("content"), list)
        for item in m["content"]
        if item.get("type") == "image"
    ]
    if not images:
        return len(ids)
    image_processor = processor.image_processor
    merge = int(getattr(image_processor, "merge_size", MERGE_SIZE))
    factor = int(sel("image_patch_size", getattr(image_processor, "patch_size", PATCH_SIZE))) * merge
    mm_kwargs = OmegaConf.to_container(sel("mm_processor_kwargs", OmegaConf.create({})), resolve=True)
    if not ("min_pixels" in mm_kwargs and "max_pixels" in mm_kwargs):
        # the processor call honours the pair only (image_processing_qwen2_vl.py:126-133)
        mm_kwargs = {k: v for k, v in mm_kwargs.items() if k not in ("min_pixels", "max_pixels")}
    image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    total = len(ids) - sum(1 for t in ids if t == image_token_id)
    for item in images:
        height, width = _image_size(item)
        h, w = _qwen_vl_smart_resize(height, width, factor)  # fetch_image with no bounds in the item
        total += image_processor.get_number_of_image_patches(h, w, dict(mm_kwargs)) // merge**2
    return total


def read_rows(paths: Iterable[str | os.PathLike]) -> Iterator[dict[str, Any]]:
    """The rows of verl RL parquet files, one row group at a time."""
    import pyarrow.parquet as pq

    for path in paths:
        parquet = pq.ParquetFile(path)
        for group in range(parquet.num_row_groups):
            yield from parquet.read_row_group(group).to_pylist()


def overlong_rows(
    paths: Iterable[str | os.PathLike], processor: Any, data_config: Any, max_examples: int = 3
) -> LengthReport:
    """How many rows of `paths` verl's overlong filter would drop, and the longest prompt."""
    from omegaconf import OmegaConf

    limit = int(OmegaConf.select(data_config, "max_prompt_length"))
    report = LengthReport(examples=[])
    for index, row in enumerate(read_rows(paths)):
        n = prompt_length(row, processor, data_config)
        report.rows += 1
        report.longest = max(report.longest, n)
        if n > limit:
            report.overlong += 1
            if len(report.examples) < max_examples:
                report.examples.append((index, n))
    return report
