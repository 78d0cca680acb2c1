"""Test and benchmark helpers: a synthetic eval-set folder, and a tiny VLM taught to give fixed answers.

A randomly initialised tiny VLM never writes a parseable decomposition, so the single/multi modes
would stop at the decomposition error. `teach_tiny_vlm` overfits the tiny model on a few
(image, prompt, answer) triples with plain supervised steps, so the pipeline runs end to end on CPU
through the real processor, chat template and `generate`, like the trained checkpoint would at scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_synthetic_eval_set(folder: str | Path, n: int, seed: int = 0, max_edits: int = 2) -> Path:
    """A data_prep records folder of `n` synthetic items (images with their scenes, targets, GT)."""
    from data_prep.records import IMAGES_DIR, Record, write_records
    from data_prep.synthetic import SOURCE, generate_items, save_png

    folder = Path(folder)
    records = []
    for item in generate_items(n, seed=seed, max_edits=max_edits):
        image = save_png(item.image, folder / IMAGES_DIR / f"{item.id}.png")
        target = save_png(item.target_image, folder / IMAGES_DIR / f"{item.id}.target.png")
        records.append(
            Record(
                id=item.id,
                source=SOURCE,
                instruction=item.request,
                image=image,
                references=(target,),
                decomposition=item.decomposition,
                plan=item.plan,
            )
        )
    write_records(folder, records)
    return folder


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
    prompt_lens = [len(processor(text=[p], images=[im])["input_ids"][0]) for p, im in zip(prompts, images)]
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
