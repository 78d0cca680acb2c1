"""verl 0.9.1 on a CPU: the very trainer the cluster runs (`verl.trainer.main_ppo`, `sft_trainer`).

Loaded in every process that imports verl (driver, TaskRunner, FSDP workers, reward workers,
agent-loop workers, rollout servers) through verl's own hook for external modules:

    VERL_USE_EXTERNAL_MODULES=recipes.verl_cpu.plugin VERL_PLATFORM=cpu python -m verl.trainer.main_ppo ...

(`verl/__init__.py:49-52`; recipes/launch.py sets both for recipes with `trainer.device: cpu` and
hands them to Ray's workers). Importing `recipes.verl_cpu.plugin` registers, without editing verl:

- the CPU platform (`platform.PlatformCPU`) in verl's PlatformRegistry,
- verl's FSDP engine for device "cpu" in its EngineRegistry,
- the transformers rollout `hf` (`rollout.py`) in verl's two rollout registries,
- the two version-checked patches of `patches.py` (gloo backend, unpinned reference offload).

Nothing here changes verl's behaviour unless VERL_PLATFORM=cpu selects the platform.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PLATFORM_NAME = "cpu"
#: actor_rollout_ref.rollout.name of the transformers rollout (recipes/config/cluster/cpu.yaml)
ROLLOUT_NAME = "hf"
#: What verl imports in every process (this package's __init__ stays free of verl imports).
PLUGIN_MODULE = "recipes.verl_cpu.plugin"


def launch_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment verl needs in every process to run on this CPU (driver and Ray workers); the
    thread counts of `environ` win where set."""
    import psutil

    environ = os.environ if environ is None else environ
    threads = str(os.cpu_count() or 1)
    physical = str(psutil.cpu_count(logical=False) or 1)
    return {
        "VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE,
        "VERL_PLATFORM": PLATFORM_NAME,
        # Ray starts workers with OMP_NUM_THREADS=1; torch on CPU wants every core.
        "OMP_NUM_THREADS": environ.get("OMP_NUM_THREADS") or threads,
        "MKL_NUM_THREADS": environ.get("MKL_NUM_THREADS") or threads,
        # TransferQueue's default of 8 torch threads warns on every put/get of a machine with fewer
        # physical cores ("target_num_threads 8 should not exceed total physical CPU cores 2",
        # transfer_queue/utils/common.py:102-106): hundreds of lines a run. Ask for what it would use.
        "TQ_NUM_THREADS": environ.get("TQ_NUM_THREADS") or physical,
    }
