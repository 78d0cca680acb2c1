"""The two places where verl 0.9.1 cannot run on a CPU as written, worked around in the smallest way.

Each patch names the verl line it works around and first checks that verl's code there is what it
expects: on another verl version it fails loudly instead of patching something else.

1. `verl/utils/distributed.py:63` and `:89` build the process-group backend as
   f"cpu:gloo,{device}:{backend}", which on the CPU platform is "cpu:gloo,cpu:gloo" (torch rejects a
   device named twice). On CPU the backend is plain "gloo".
2. `verl/workers/engine/fsdp/transformer_impl.py:462` offloads the reference model with
   `CPUOffloadPolicy(pin_memory=True)`; pinned memory needs CUDA. On CPU it is unpinned.
"""

from __future__ import annotations

import inspect
from datetime import timedelta

import verl

VERL_VERSION = "0.9.1"
_DISTRIBUTED_LINE = 'f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"'
_OFFLOAD_LINE = "offload_policy = CPUOffloadPolicy(pin_memory=True)"


class VerlVersionError(RuntimeError):
    """verl's code differs from what a patch was written against."""


def _expect(obj, text: str, where: str) -> None:
    if verl.__version__ != VERL_VERSION or text not in inspect.getsource(obj):
        raise VerlVersionError(
            f"recipes.verl_cpu was written against verl {VERL_VERSION}; this is verl {verl.__version__} "
            f"and {where} no longer holds {text!r}. Re-check the CPU patches in {__file__}."
        )


def patch_process_group_backend() -> None:
    """Plain "gloo" for verl's two process-group initialisers (Ray workers and torchrun)."""
    from verl.utils import distributed

    ray_init = distributed.initialize_global_process_group_ray
    _expect(ray_init, _DISTRIBUTED_LINE, "verl/utils/distributed.py:89")
    _expect(distributed.initialize_global_process_group, _DISTRIBUTED_LINE, "verl/utils/distributed.py:63")
    if getattr(ray_init, "__verl_cpu_patched__", False):
        return

    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return ray_init(timeout_second=timeout_second, backend=backend or "gloo")

    def initialize_global_process_group(timeout_second=36000):
        # verl's own body with the backend fixed (the original has no backend argument)
        import os

        import torch.distributed

        torch.distributed.init_process_group(
            backend="gloo",
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    initialize_global_process_group_ray.__verl_cpu_patched__ = True
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray
    distributed.initialize_global_process_group = initialize_global_process_group


def patch_reference_offload() -> None:
    """The reference model's FSDP2 offload policy without pinned memory."""
    from verl.workers.engine.fsdp import transformer_impl

    policy = transformer_impl.CPUOffloadPolicy
    if getattr(policy, "__verl_cpu_patched__", False):
        return
    _expect(transformer_impl.FSDPEngine, _OFFLOAD_LINE, "verl/workers/engine/fsdp/transformer_impl.py:462")

    class UnpinnedCPUOffloadPolicy(policy):
        __verl_cpu_patched__ = True

        def __init__(self, pin_memory: bool = False, **kwargs) -> None:
            super().__init__(pin_memory=False, **kwargs)

    transformer_impl.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def register_fsdp_engine_for_cpu() -> None:
    """verl registers its FSDP engines for cuda/npu only (`transformer_impl.py:1143`); add cpu."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp import transformer_impl

    engines = EngineRegistry._engines.get("language_model", {})
    for backend in ("fsdp", "fsdp2"):
        if "cpu" not in engines.get(backend, {}):
            EngineRegistry.register(model_type="language_model", backend=backend, device="cpu")(
                transformer_impl.FSDPEngineWithLMHead
            )
