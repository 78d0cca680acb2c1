"""verl 0.9.1 on a CPU: the very trainer the cluster runs (`verl.trainer.main_ppo`, `sft_trainer`).

Loaded in every process that imports verl (driver, TaskRunner, FSDP workers, reward workers,
agent-loop workers, rollout servers) through verl's own hook for external modules:

    VERL_USE_EXTERNAL_MODULES=recipes.verl_cpu VERL_PLATFORM=cpu python -m verl.trainer.main_ppo ...

(`verl/__init__.py:49-52`; recipes/launch.py sets both for recipes with `trainer.device: cpu`, and
the recipe passes them on to Ray's workers). Importing this module registers, without editing verl:

- the CPU platform (`platform.PlatformCPU`) in verl's PlatformRegistry,
- verl's FSDP engine for device "cpu" in its EngineRegistry,
- the transformers rollout `hf` (`rollout.py`) in verl's two rollout registries,
- the two version-checked patches of `patches.py` (gloo backend, unpinned reference offload).

Nothing here changes verl's behaviour unless VERL_PLATFORM=cpu selects the platform.
"""

from __future__ import annotations

import os

from verl.workers.rollout import base as _rollout_base
from verl.workers.rollout.replica import RolloutReplicaRegistry

from recipes.verl_cpu import patches
from recipes.verl_cpu.platform import PLATFORM_NAME, PlatformCPU
from recipes.verl_cpu.rollout import ROLLOUT_NAME, HFReplica, HFServerAdapter

__all__ = ["PLATFORM_NAME", "ROLLOUT_NAME", "PlatformCPU", "HFReplica", "HFServerAdapter", "launch_env"]

MODULE = __name__


def launch_env(threads: int | None = None) -> dict[str, str]:
    """The environment verl needs in every process to run on this CPU (driver and Ray workers)."""
    threads = threads or os.cpu_count() or 1
    return {
        "VERL_USE_EXTERNAL_MODULES": MODULE,
        "VERL_PLATFORM": PLATFORM_NAME,
        # Ray starts workers with OMP_NUM_THREADS=1; torch on CPU wants every core.
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }


def _register() -> None:
    _rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{HFServerAdapter.__module__}.HFServerAdapter"
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFReplica)
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
        patches.patch_process_group_backend()
        patches.patch_reference_offload()
        patches.register_fsdp_engine_for_cpu()


_register()
