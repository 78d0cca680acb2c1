"""A tiny VLM taught to give fixed answers (the inference bench and the end-to-end tests).

A randomly initialised tiny VLM never writes a parseable decomposition, so the single/multi modes
would stop at the decomposition error. `teach_tiny_vlm` overfits the tiny model on a few
(image, prompt, answer) triples with plain supervised steps, so the pipeline runs end to end on CPU
through the real processor, chat template and `generate`, like the trained checkpoint would at scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def teach_tiny_vlm(
    vlm_dir: str | Path,
    examples: Sequence[tuple[Any, str, str]],
    out_dir: str | Path,
    steps: int = 150,
    lr: float = 3e-3,
    seed: int = 0,
) -> Path:
    """Fine-tune the VLM in `vlm_dir` on (PIL image, user text, answer) triples; save to `out_dir`."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from inference.prompts import user_message

    processor = AutoProcessor.from_pretrained(vlm_dir)
    model = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32)
    tok = processor.tokenizer
    tok.padding_side = "right"
    prompts, fulls, images = [], [], []
    for image, text, answer in examples:
        conv = user_message(text, [image])
        prompt = processor.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        prompts.append(prompt)
        fulls.append(prompt + answer + tok.eos_token)
        images.append(image)
    enc = processor(text=fulls, images=images, padding=True, return_tensors="pt")
    prompt_lens = [
        len(processor(text=[p], images=[im])["input_ids"][0]) for p, im in zip(prompts, images, strict=True)
    ]
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    for row, n in enumerate(prompt_lens):
        labels[row, :n] = -100
    torch.manual_seed(seed)
    model.train()
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def cached_taught_vlm(
    vlm_dir: str | Path,
    examples: Sequence[tuple[Any, str, str]],
    steps: int = 50,
    lr: float = 4e-3,
    cache_dir: str | Path | None = None,
) -> Path:
    """`teach_tiny_vlm` once per distinct (base weights, examples, steps, lr), cached on disk.

    The cache lives in `$IMAGEEDIT_TEST_CACHE` (default: `<tmp>/imageedit-r1-test-cache`); entries
    appear atomically (built in a temp folder, then renamed), so parallel test files can share it.
    """
    import hashlib
    import os
    import tempfile

    import torch

    from inference.fileio import atomic_dir

    digest = hashlib.sha256(f"{steps}/{lr}/{torch.__version__}".encode())
    for name in sorted(os.listdir(vlm_dir)):
        path = Path(vlm_dir) / name
        if path.is_file():
            digest.update(name.encode() + path.read_bytes())
    for image, text, answer in examples:
        digest.update(image.tobytes() + f"{image.size}{text}\0{answer}".encode())
    root = Path(
        cache_dir
        or os.environ.get("IMAGEEDIT_TEST_CACHE")
        or Path(tempfile.gettempdir()) / "imageedit-r1-test-cache"
    )
    target = root / f"taught-vlm-{digest.hexdigest()[:16]}"
    if (target / "config.json").is_file():
        return target
    with atomic_dir(target, keep_existing=True) as tmp:  # another process finished first: theirs wins
        teach_tiny_vlm(vlm_dir, examples, tmp, steps=steps, lr=lr)
    return target


def taught_on_first_item(eval_set: str | Path, vlm_dir: str | Path):
    """(first record of `eval_set`, a tiny VLM taught its decomposition and plan), cached."""
    from inference.pipeline import load_image
    from inference.prompts import decomposition_prompt, sequencing_prompt
    from inference.protocol import render_decomposition, render_plan
    from inference.records import read_records

    first = next(read_records(eval_set))
    image = load_image(first.image)
    examples = [
        (image, decomposition_prompt(first.instruction), render_decomposition(first.decomposition)),
        (image, sequencing_prompt(first.instruction, first.decomposition), render_plan(first.plan)),
    ]
    return first, cached_taught_vlm(vlm_dir, examples)
