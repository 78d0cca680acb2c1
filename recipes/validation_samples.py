"""A W&B table of held-out samples at every validation: image, request, answer and reward components.

verl's `trainer.log_val_generations` logs `val/generations`: one row per validation, with N decoded
prompts, answers and total scores side by side. The decoded prompt has no image (the image tokens are
special tokens, dropped) and the total hides which part of the answer was wrong. For an editing agent
the user wants to see the picture next to the request, the decomposition, and its format, action,
subject and goal rewards, for the same items at every validation.

verl 0.9.1 builds its trainer as `TRAINER_REGISTRY[trainer.v1.trainer_mode]` (`verl/trainer/main_ppo.py:141`).
This module registers, under verl's own name `sync` (the mode our recipes use; verl's code tests the
name, so it keeps it), `PPOTrainerSync` with `ValidationSamples` mixed in. The mixin adds `val/samples`
(one row per sample: step, item, image, request, answer, reward, the four components) next to verl's
own table, which it leaves as it is. It reads what verl's `_validate` already holds: the validation
batches (their images and `extra_info`), the samples' uids, answers and reward components; of verl's trainer it
uses the three methods it extends and the attributes `val_dataloader`, `config` and `global_steps`. It
holds the validation's batch dicts until the validation ends (references; the images of data_prep's parquet files stay as their
encoded bytes). The other trainer modes keep verl's table only.

The registration runs when verl's `trainer_sync` module is imported (wrapt's post-import hook), so a
process that never builds a trainer (FSDP, rollout and reward workers) imports nothing more. verl
imports this module in every process (`VERL_USE_EXTERNAL_MODULES`, set by `recipes.launch` for every
recipe, GPU and CPU). A failure to build the table is logged as a warning and training goes on: it is
a view of the run, not part of it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator
from typing import Any

import wrapt

logger = logging.getLogger(__name__)

#: verl's module whose import registers its sync trainer; ours replaces that entry right after.
VERL_SYNC_TRAINER_MODULE = "verl.trainer.ppo.v1.trainer_sync"
VERL_VERSION = "0.9.1"
#: The W&B key of the table.
TABLE_KEY = "val/samples"
#: Which rows a validation logs: a fixed pseudo-random choice of items, the same at every validation.
SAMPLE_SEED = 0
#: Longest side of the image in the table (a thumbnail: W&B keeps every validation's rows).
THUMBNAIL = 256


class RecordingLoader:
    """Iterates the loader it wraps and keeps each batch dict (verl adds the uids after the yield)."""

    def __init__(self, loader: Iterable[dict[str, Any]], batches: list[dict[str, Any]]) -> None:
        self.loader = loader
        self.batches = batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            self.batches.append(batch)
            yield batch


def prompt_image(messages: Any) -> Any:
    """The first image of verl's `raw_prompt` (RLHFDataset `_build_messages`: a content item
    {"type": "image", "image": PIL} or {"type": "image", "bytes": .., "path": ..}); None without one."""
    for message in messages if messages is not None else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            for item in content:
                if isinstance(item, dict) and item.get("type") == "image":
                    return (
                        item["image"]
                        if "image" in item
                        else {"bytes": item.get("bytes"), "path": item.get("path")}
                    )
    return None


def items_by_uid(batches: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """uid -> {"image", "extra_info"} over verl's validation batch dicts."""
    items: dict[str, dict[str, Any]] = {}
    for batch in batches:
        uids = batch.get("uid")
        if uids is None:
            continue
        prompts = batch.get("raw_prompt", [None] * len(uids))
        extras = batch.get("extra_info", [None] * len(uids))
        for uid, messages, extra in zip(uids, prompts, extras, strict=True):
            items[str(uid)] = {
                "image": prompt_image(messages),
                "extra_info": extra if isinstance(extra, dict) else {},
            }
    return items


def item_key(extra_info: dict[str, Any], uid: str) -> str:
    """What identifies an item across validations (verl's uids are new each time)."""
    for key in ("id", "index"):
        if extra_info.get(key) is not None:
            return str(extra_info[key])
    return uid


def sample_rows(
    step: int,
    uids: list[str],
    inputs: list[str],
    outputs: list[str],
    scores: list[float],
    components: dict[str, list[Any]],
    items: dict[str, dict[str, Any]],
    count: int,
) -> list[dict[str, Any]]:
    """The logged samples: `count` items chosen by a fixed seed from the sorted item keys (so the same
    items at every validation of the same set), every sample of each, as dicts in table column order."""
    keyed = [(item_key(items.get(uid, {}).get("extra_info", {}), uid), i) for i, uid in enumerate(uids)]
    keys = sorted({key for key, _ in keyed})
    chosen = set(random.Random(SAMPLE_SEED).sample(keys, min(count, len(keys))))
    rows = []
    for key, i in sorted(keyed):
        if key not in chosen:
            continue
        item = items.get(uids[i], {})
        extra = item.get("extra_info", {})
        row = {
            "step": step,
            "item": key,
            "image": item.get("image"),
            "request": extra.get("request") or inputs[i],
            "answer": outputs[i],
            "reward": float(scores[i]),
        }
        for name, values in components.items():
            row[name] = None if values[i] is None else float(values[i])
        rows.append(row)
    return rows


def wandb_image(source: Any):
    """A W&B image (a thumbnail) of an image value, or None when there is none or it does not open."""
    import wandb

    from inference.fileio import BadImage, load_rgb

    if source is None:
        return None
    try:
        image = load_rgb(source, check=False).copy()  # thumbnail() resizes in place: not the batch's image
    except BadImage as exc:
        logger.warning("val/samples: no image for a sample (%s)", exc)
        return None
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return wandb.Image(image)


class ValidationSamples:
    """Mixed into verl's trainer: `val/samples` at every validation (see the module docstring)."""

    def _validate(self):
        self._val_batches: list[dict[str, Any]] = []
        self._val_generations: tuple[list, list, list] | None = None
        loader = self.val_dataloader
        self.val_dataloader = RecordingLoader(loader, self._val_batches)
        try:
            return super()._validate()
        finally:
            self.val_dataloader = loader
            self._val_batches = []

    def _maybe_log_val_generations(self, inputs, outputs, scores):
        super()._maybe_log_val_generations(inputs=inputs, outputs=outputs, scores=scores)
        self._val_generations = (list(inputs), list(outputs), list(scores))

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, *args, **kwargs):
        try:
            self._log_val_samples(list(sample_uids), reward_extra_infos_dict)
        except Exception as exc:  # a view of the run, not part of it: say so and train on
            logger.warning("val/samples: the table of validation samples was not logged: %r", exc)
        return super()._val_metrics_update(
            data_sources, sample_uids, reward_extra_infos_dict, *args, **kwargs
        )

    def _log_val_samples(self, uids: list[str], reward_extra_infos_dict: dict[str, list]) -> None:
        count = int(self.config.trainer.get("log_val_generations", 0) or 0)
        if not count or "wandb" not in self.config.trainer.logger or self._val_generations is None:
            return
        import wandb

        if wandb.run is None:
            return
        from reward_fns.components import REWARD_COMPONENTS

        inputs, outputs, scores = self._val_generations
        components = {
            name: list(reward_extra_infos_dict[name])
            for name in REWARD_COMPONENTS
            if len(reward_extra_infos_dict.get(name, ())) == len(uids)
        }
        rows = sample_rows(
            self.global_steps,
            uids,
            inputs,
            outputs,
            scores,
            components,
            items_by_uid(self._val_batches),
            count,
        )
        columns = ["step", "item", "image", "request", "answer", "reward", *components]
        data = [[wandb_image(row["image"]) if c == "image" else row.get(c) for c in columns] for row in rows]
        previous = getattr(self, "_val_samples_data", [])
        if previous and len(previous[0]) != len(columns):
            previous = []
        # A new table with the earlier rows each time (wandb/wandb#2981, as verl's own table does)
        self._val_samples_data = [*previous, *data]
        wandb.log(
            {TABLE_KEY: wandb.Table(columns=columns, data=self._val_samples_data)}, step=self.global_steps
        )


def register(module) -> None:
    """Put `ValidationSamples` + verl's sync trainer under verl's name `sync`, after checking that
    verl's trainer still has the three methods the mixin extends."""
    import verl
    from verl.trainer.ppo.v1 import trainer_base

    base = module.PPOTrainerSync
    missing = [
        name
        for name in ("_validate", "_maybe_log_val_generations", "_val_metrics_update")
        if not callable(getattr(base, name, None))
    ]
    if missing:
        raise RuntimeError(
            f"recipes.validation_samples was written for verl {VERL_VERSION}; verl {verl.__version__}'s "
            f"PPOTrainerSync lacks {missing}: drop recipes.validation_samples from VERL_USE_EXTERNAL_MODULES"
        )
    trainer = type("PPOTrainerSyncWithSamples", (ValidationSamples, base), {"__module__": __name__})
    trainer_base.TRAINER_REGISTRY["sync"] = trainer  # verl's register_trainer refuses a second class


wrapt.register_post_import_hook(register, VERL_SYNC_TRAINER_MODULE)
