"""The image bound training used (min_pixels / max_pixels), carried from the run into the exported model.

verl builds the model's processor without the recipe's `data.mm_processor_kwargs`
(`verl/workers/config/model.py:162`), so the processor saved in every checkpoint (and the folder
`make export` merges) keeps the processor's default bound: 12,845,056 pixels for Qwen2.5-VL, up to
16,384 tokens per image, where the paper recipe trained on at most 1,536. Then an inference backend
that loads the exported folder sees larger images than the policy learned on.

- `record(config)`: the launcher writes the run's bound to `<trainer.default_local_dir>/image_bound.json`
  when a run starts (the folder its checkpoints go to).
- `python -m recipes.image_bound apply HF_DIR --checkpoint CKPT_ROOT` (recipes/export.sh, after the
  merge): the bound goes into HF_DIR's image processor config (`min_pixels`, `max_pixels` and `size`,
  the keys transformers' Qwen2-VL image processor reads; preprocessor_config.json and/or the
  "image_processor" of processor_config.json, where transformers 5 saves it), so transformers' AutoProcessor, vLLM (which
  builds the same HF processor from the folder) and `vllm serve` on it apply it with no option.
  MIN_PIXELS / MAX_PIXELS in the environment give it for a checkpoint without the record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

RECORD_NAME = "image_bound.json"
PROCESSOR_CONFIG = "preprocessor_config.json"
JOINT_PROCESSOR_CONFIG = "processor_config.json"


def bound_of(config: DictConfig) -> dict[str, int]:
    """{min_pixels, max_pixels} of `data.mm_processor_kwargs`, both or nothing (the Qwen-VL processor
    honours the pair only, image_processing_qwen2_vl.py:126-133)."""
    kwargs = OmegaConf.select(config, "data.mm_processor_kwargs") or {}
    pair = {k: kwargs.get(k) for k in ("min_pixels", "max_pixels")}
    return {k: int(v) for k, v in pair.items()} if None not in pair.values() else {}


def checkpoint_root(config: DictConfig, repo_root: Path) -> Path:
    folder = Path(str(config.trainer.default_local_dir))
    return folder if folder.is_absolute() else repo_root / folder


def record(config: DictConfig, repo_root: Path) -> Path | None:
    """Write the run's bound beside its checkpoints (nothing for a recipe without one)."""
    from inference.fileio import write_json

    bound = bound_of(config)
    if not bound:
        return None
    path = checkpoint_root(config, repo_root) / RECORD_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**bound, "source": "data.mm_processor_kwargs"})
    return path


def recorded(checkpoint: Path, environ: dict[str, str] | None = None) -> tuple[dict[str, int], str]:
    """The bound for a checkpoint (a run root, global_step_N or its actor/): MIN_PIXELS/MAX_PIXELS from
    the environment, else the run's record; ({}, why) when neither exists."""
    environ = os.environ if environ is None else environ
    given = {k: environ.get(k.upper()) for k in ("min_pixels", "max_pixels")}
    if any(given.values()):
        if not all(given.values()):
            raise ValueError("set both MIN_PIXELS and MAX_PIXELS (the processor honours the pair only)")
        return {k: int(v) for k, v in given.items()}, "MIN_PIXELS/MAX_PIXELS"
    for folder in (checkpoint, *checkpoint.parents[:3]):
        path = folder / RECORD_NAME
        if path.is_file():
            data = json.loads(path.read_text())
            return {k: int(data[k]) for k in ("min_pixels", "max_pixels")}, str(path)
    return {}, f"no {RECORD_NAME} beside {checkpoint} (a run started before the record existed?)"


def _bounded(image_processor: dict, bound: dict[str, int]) -> dict:
    size = {"shortest_edge": bound["min_pixels"], "longest_edge": bound["max_pixels"]}
    return {**image_processor, **bound, "size": size}


def apply(hf_dir: Path, bound: dict[str, int]) -> list[Path]:
    """Write the bound into the image processor hf_dir holds, atomically: preprocessor_config.json (the
    image processor's own file, as on the hub) and/or processor_config.json's "image_processor" (where
    transformers 5 saves it). Returns the files written."""
    from inference.fileio import write_json

    written = []
    own = hf_dir / PROCESSOR_CONFIG
    if own.is_file():
        write_json(own, _bounded(json.loads(own.read_text()), bound))
        written.append(own)
    joint = hf_dir / JOINT_PROCESSOR_CONFIG
    if joint.is_file():
        config = json.loads(joint.read_text())
        if isinstance(config.get("image_processor"), dict):
            write_json(joint, {**config, "image_processor": _bounded(config["image_processor"], bound)})
            written.append(joint)
    if not written:
        raise FileNotFoundError(
            f"no image processor config in {hf_dir} ({PROCESSOR_CONFIG}, or {JOINT_PROCESSOR_CONFIG} with an "
            "image_processor): not a merged multimodal HF folder"
        )
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.image_bound", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    put = sub.add_parser("apply", help="write the training's bound into an exported folder's processor")
    put.add_argument("hf_dir", type=Path)
    put.add_argument(
        "--checkpoint", type=Path, required=True, help="the checkpoint the folder was merged from"
    )
    args = parser.parse_args(argv)
    try:
        bound, source = recorded(args.checkpoint)
        if not bound:
            print(
                f"warning: {source}: the exported processor keeps its default image bound, which may let "
                "inference see larger images than training did. Give the training's bound with "
                "MIN_PIXELS=.. MAX_PIXELS=.. make export ...",
                file=sys.stderr,
            )
            return 0
        written = apply(args.hf_dir, bound)
    except (OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"image bound min_pixels={bound['min_pixels']} max_pixels={bound['max_pixels']} ({source}) -> "
        + ", ".join(p.name for p in written),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
