"""Registers the CPU platform, engine, rollout and patches in verl: the module verl imports.

`VERL_USE_EXTERNAL_MODULES=recipes.verl_cpu.plugin` makes every process that imports verl import this
(`verl/__init__.py:49-52`); see the package docstring.
"""

from __future__ import annotations

import logging
import os

from verl.workers.rollout import base as _rollout_base
from verl.workers.rollout.replica import RolloutReplicaRegistry

from recipes.verl_cpu import PLATFORM_NAME, ROLLOUT_NAME, patches
from recipes.verl_cpu.platform import PlatformCPU

__all__ = ["PlatformCPU", "register"]
#: Imported lazily, as verl does its own engines: a Ray worker that unpickles a rollout class imports
#: recipes.verl_cpu.rollout first, which imports verl, which imports this plugin.
ROLLOUT_MODULE = "recipes.verl_cpu.rollout"


def _load_replica():
    from recipes.verl_cpu.rollout import HFReplica

    return HFReplica


#: transformers warns on every `apply_chat_template` call of verl's SFT dataset
#: (`verl/utils/dataset/multiturn_sft_dataset.py:214`, it passes `tools=`), once per row: thousands of
#: identical lines that bury the progress log. Dropped in the processes this plugin runs in.
NOISY_TRANSFORMERS_WARNING = "Kwargs passed to `processor.__call__` have to be in `processor_kwargs` dict"


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_known_noise() -> None:
    logging.getLogger("transformers.processing_utils").addFilter(_DropMessage(NOISY_TRANSFORMERS_WARNING))


def register() -> None:
    _rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{ROLLOUT_MODULE}.HFServerAdapter"
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
        patches.patch_process_group_backend()
        patches.patch_reference_offload()
        patches.register_fsdp_engine_for_cpu()
        quiet_known_noise()


register()
