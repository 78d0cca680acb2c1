"""What a tiny CPU recipe trains on and from, built offline: the synthetic set and the tiny model.

verl has no keys for either. The recipe's `assets:` block says where they go and how big they are;
`make train` / `make demo` build them before verl starts (seconds), and reuse them when a folder
already holds what the recipe asks for:

    python -m recipes.tiny_assets [--recipe imageedit_r1_tiny] [hydra overrides]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

#: What a tiny model folder was built with (recipes.tiny_assets reuses it only when that matches).
MODEL_MANIFEST = "tiny_assets.json"


def ensure_data(cfg: DictConfig, progress: bool = True) -> Path:
    """The synthetic set in `assets.data.dir`, rebuilt only when its manifest asks for other sizes."""
    spec = cfg.assets.data
    out = Path(str(spec.dir))
    want = {
        "train": int(spec.train),
        "val": int(spec.val),
        "seed": int(spec.seed),
        "max_edits": int(spec.get("max_edits", 4)),
        "teacher_drop": float(spec.get("teacher_drop", 0.0)),
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
    """The tiny random Qwen2.5-VL in `assets.model.dir`, its tokenizer trained on the data's corpus;
    rebuilt when the folder's manifest (written beside the weights) asks for other sizes, another
    seed or another corpus, or when there is none (a folder `make tiny` or an older run left)."""
    from inference.fileio import atomic_dir, write_json
    from inference.tiny import TinyVLMSize, build_tiny_vlm

    spec = cfg.assets.model
    out = Path(str(spec.dir))
    corpus_file = Path(str(cfg.assets.data.dir)) / "corpus.txt"
    corpus_text = corpus_file.read_text(encoding="utf-8") if corpus_file.is_file() else None
    want = {
        "text_hidden": int(spec.text_hidden),
        "text_layers": int(spec.text_layers),
        "vision_hidden": int(spec.vision_hidden),
        "image_pixels": int(spec.image_pixels),
        "seed": int(cfg.assets.get("seed", 0)),
        "corpus_sha256": hashlib.sha256(corpus_text.encode()).hexdigest() if corpus_text else None,
    }
    manifest = out / MODEL_MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")) == want:
        return out
    if out.exists():
        print(f"[assets] {out} was not built with {want}: rebuilding")
    size = TinyVLMSize(
        text_hidden=want["text_hidden"],
        text_layers=want["text_layers"],
        vision_hidden=want["vision_hidden"],
        min_pixels=want["image_pixels"],
        max_pixels=want["image_pixels"],
    )
    corpus = corpus_text.splitlines() if corpus_text else None
    with atomic_dir(out) as tmp:
        build_tiny_vlm(tmp, corpus=corpus, seed=want["seed"], size=size)
        write_json(tmp / MODEL_MANIFEST, want)
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
