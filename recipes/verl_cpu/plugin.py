"""Registers the CPU platform, engine, rollout and patches in verl: the module verl imports.

`VERL_USE_EXTERNAL_MODULES=recipes.verl_cpu.plugin` makes every process that imports verl import this
(`verl/__init__.py:49-52`); see the package docstring.
"""

from __future__ import annotations

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


def register() -> None:
    _rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{ROLLOUT_MODULE}.HFServerAdapter"
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica)
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
        patches.patch_process_group_backend()
        patches.patch_reference_offload()
        patches.register_fsdp_engine_for_cpu()


register()
