"""What a tiny CPU recipe trains on and from, built offline: the synthetic set and the tiny model.

verl has no keys for either. The recipe's `assets:` block says where they go and how big they are;
`make train` / `make demo` build them before verl starts (seconds), and reuse them when a folder
already holds what the recipe asks for:

    python -m recipes.tiny_assets [--recipe imageedit_r1_tiny] [hydra overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig


def ensure_data(cfg: DictConfig, progress: bool = True) -> Path:
    """The synthetic set in `assets.data.dir`, rebuilt only when its manifest asks for other sizes."""
    spec = cfg.assets.data
    out = Path(str(spec.dir))
    want = {
        "train": int(spec.train),
        "val": int(spec.val),
        "seed": int(spec.seed),
        "max_edits": int(spec.get("max_edits", 4)),
    }
    manifest = out / "manifest.json"
    if manifest.is_file():
        have = json.loads(manifest.read_text(encoding="utf-8"))
        if all(have.get(k) == v for k, v in want.items()):
            return out
        print(f"[assets] {out} holds { {k: have.get(k) for k in want} }, the recipe wants {want}: rebuilding")
    from data_prep.synthetic import write_dataset

    print(f"[assets] building the synthetic set into {out} {want}")
    write_dataset(out, progress=progress, **want)
    return out


def ensure_model(cfg: DictConfig) -> Path:
    """The tiny random Qwen2.5-VL in `assets.model.dir`, its tokenizer trained on the data's corpus."""
    from inference.tiny import TinyVLMSize, build_tiny_vlm

    spec = cfg.assets.model
    out = Path(str(spec.dir))
    if (out / "config.json").is_file() and (out / "tokenizer.json").is_file():
        return out
    corpus_file = Path(str(cfg.assets.data.dir)) / "corpus.txt"
    corpus = corpus_file.read_text(encoding="utf-8").splitlines() if corpus_file.is_file() else None
    pixels = int(spec.image_pixels)
    size = TinyVLMSize(
        text_hidden=int(spec.text_hidden),
        text_layers=int(spec.text_layers),
        vision_hidden=int(spec.vision_hidden),
        min_pixels=pixels,
        max_pixels=pixels,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build_tiny_vlm(tmp, corpus=corpus, seed=int(cfg.assets.get("seed", 0)), size=size)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"[assets] built the tiny Qwen2.5-VL at {out} ({size})")
    return out


def ensure(cfg: DictConfig, progress: bool = True) -> dict[str, Path]:
    """Both assets of a recipe with an `assets:` block (a no-op for recipes without one)."""
    if cfg.get("assets") is None:
        return {}
    out = {}
    if cfg.assets.get("data") is not None:
        out["data"] = ensure_data(cfg, progress=progress)
    if cfg.assets.get("model") is not None:
        out["model"] = ensure_model(cfg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from recipes.launch import compose

    parser = argparse.ArgumentParser(
        prog="python -m recipes.tiny_assets", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--recipe", default="imageedit_r1_tiny")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    for name, path in ensure(compose(args.recipe, args.overrides)).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
