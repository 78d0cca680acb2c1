"""A cold-started tiny policy for tests: a few teacher-forced steps on the synthetic SFT answers.

A random model's next-token distribution is nearly flat, so a rollout whose positions or masking are
wrong still agrees with the trainer to ~1e-4; after a short cold start the distribution is peaked and
such a bug shows (verl's training/rollout_probs_diff_mean 0.013-0.024 instead of ~0.003). This is test
scaffolding, not a trainer: the repo's cold start is verl's SFT trainer (recipe sft_tiny).
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import torch
from PIL import Image


def cold_start(model_dir: Path, sft_parquet: Path, out_dir: Path, steps: int = 40, batch: int = 16) -> Path:
    """Train `model_dir` for `steps` steps of answer-token NLL and save it to `out_dir`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    rows = pq.read_table(sft_parquet).to_pylist()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        chunk = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        prompts, fulls, images = [], [], []
        for row in chunk:
            user, answer = row["messages"][0]["content"], row["messages"][-1]["content"]
            chat = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": user.replace("<image>", "")}],
                }
            ]
            prompt = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            prompts.append(prompt)
            fulls.append(prompt + answer + "<|im_end|>")
            images.append(Image.open(io.BytesIO(row["images"][0]["bytes"])).convert("RGB"))
        enc = processor(
            text=fulls,
            images=images,
            padding=True,
            padding_side="right",
            return_tensors="pt",
            return_mm_token_type_ids=True,
        )
        prompt_lens = [
            len(processor(text=[p], images=[im], return_tensors="pt")["input_ids"][0])
            for p, im in zip(prompts, images, strict=True)
        ]
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for i, n in enumerate(prompt_lens):
            labels[i, :n] = -100
        loss = model(**enc, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
