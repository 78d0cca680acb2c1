"""Preflight: what would end a GPU run after the model and vLLM have loaded, checked in seconds first.

`make doctor` (and `make train` / `make submit` before they launch, also under DRY_RUN=1) runs:

- `versions`: this interpreter's torch / vLLM / transformers / flash-attn against verl 0.9.1's own
  extras (its package metadata: `vllm`, `fsdp`), so a CPU environment is never taken for a GPU one;
- `attention`: flash-attn imported for real (its CUDA extension against this torch) when the recipe
  uses it (verl's default flash_attention_2, remove-padding); with sdpa, what that costs;
- `engine_kwargs`: every `actor_rollout_ref.rollout.engine_kwargs.vllm` key is a field of vLLM's own
  `EngineArgs` (verl turns each into a `vllm serve` flag, and vLLM stops on an unknown one); without
  vLLM here, of vLLM 0.24.0's field list (recipes/vllm_0_24_0_engine_args.txt, the version pinned);
- `gpus`: GPUs visible here (or on the Ray cluster at RAY_ADDRESS) versus NODES x GPUS; with none,
  whether the NVIDIA driver is too old for torch's CUDA (torch 2.11 is built for CUDA 13: driver >= 580);
- `cluster`: on a running Ray cluster, that NODES nodes have joined and, in a task on every node with
  the runtime_env verl will pass to ray.init, that the reward file, the replay-buffer class and the data
  files resolve, the environment arrives, and the metrics folder exists (created there);
- `model`: the policy's weights (config and every weight shard) are a local folder or, with downloads
  off (HF_HUB_OFFLINE=1, the default of recipes/env.sh), in the HF cache;
- `checkpoints`: the size of one checkpoint and of the ones kept (trainer.max_actor_ckpt_to_keep)
  against the free disk under trainer.default_local_dir;
- `image_budget` / `prompt_lengths`: the recipe's image bound holds max_prompt_length, and the rows of
  the training and validation parquets that verl's overlong filter would drop (refused unless
  ALLOW_OVERLONG=1; refused too when the processor to count them with is not on this machine);
- `settings`: keys verl 0.9.1 ignores or rewrites (a warning each).

A CPU recipe (trainer.device=cpu) gets no GPU, vLLM or flash-attn demands. Under DRY_RUN the checks
that depend on this machine (versions, GPUs, cluster, model and data on disk) warn instead of failing, so a
laptop can dry-run the GPU recipe. Exit code 2 when a check fails, with the fix named.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recipes import launch

#: verl extras a GPU recipe needs (verl's metadata pins torch, vLLM, transformers, flash-attn there).
GPU_EXTRAS = ("vllm", "fsdp")
CHECKED_PACKAGES = ("torch", "torchvision", "vllm", "transformers", "flash-attn", "qwen-vl-utils")
#: Checks whose answer depends on this machine: warnings under DRY_RUN.
MACHINE_CHECKS = {"versions", "attention", "gpus", "cluster", "prompt_lengths", "model"}
#: vLLM 0.24.0's EngineArgs fields (one a line; the header names the wheel and file they come from).
ENGINE_ARGS_FILE = Path(__file__).resolve().parent / "vllm_0_24_0_engine_args.txt"
PINNED_VLLM = "0.24.0"
#: The sdpa route: no flash-attn needed (README "GPU node").
SDPA_OVERRIDES = (
    "actor_rollout_ref.model.use_remove_padding=false",
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
)
#: Oldest Linux driver per CUDA major of torch's build (NVIDIA's CUDA toolkit release notes: 13.0 GA needs
#: >= 580.65.06; 12.x runs on >= 525.60.13 by minor-version compatibility).
MIN_DRIVER = {13: (580, 65, 6), 12: (525, 60, 13)}


@dataclass
class Finding:
    check: str
    status: str  # ok | warn | fail | skip
    detail: str
    fix: str = ""


def failed(findings: Iterable[Finding]) -> bool:
    return any(f.status == "fail" for f in findings)


def report(findings: Sequence[Finding]) -> str:
    lines = ["# doctor:"]
    for f in findings:
        lines.append(f"{f.status.upper():5} {f.check}: {f.detail}")
        if f.fix and f.status in ("fail", "warn"):
            lines.append(f"      fix: {f.fix}")
    verdict = "FAILED" if failed(findings) else "passed"
    lines.append(f"# doctor: {verdict}")
    return "\n".join(lines)


# --- versions ----------------------------------------------------------------------------------------


def verl_requirements(extras: Sequence[str]) -> dict[str, str]:
    """{package: specifier} verl's own metadata requires for `extras` (self-references expanded)."""
    from packaging.requirements import Requirement

    requires = [Requirement(r) for r in importlib.metadata.requires("verl") or []]
    wanted, seen, out = list(extras), set(), {}
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in requires:
            if req.marker is None or not req.marker.evaluate({"extra": extra}):
                continue
            if req.name == "verl":
                wanted.extend(req.extras)
            elif str(req.specifier):
                out[req.name] = str(req.specifier)
    for req in requires:  # the base requirements (no extra)
        if req.marker is None and str(req.specifier):
            out.setdefault(req.name, str(req.specifier))
    return out


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions(config: DictConfig) -> Finding:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    gpu = not launch.is_cpu(config)
    needs = verl_requirements(GPU_EXTRAS if gpu else ())
    if not gpu:
        needs = {k: v for k, v in needs.items() if k in ("transformers",)}
    if not uses_flash_attention(config):  # the sdpa route (the `attention` check says what it costs)
        needs.pop("flash-attn", None)
    have, bad = [], []
    for name in CHECKED_PACKAGES:
        version = installed_version(name)
        spec = needs.get(name)
        if version is not None:
            have.append(f"{name} {version}")
        if spec is None:
            continue
        if version is None:
            bad.append(f"{name} missing (verl wants {spec})")
        elif Version(version) not in SpecifierSet(spec):
            bad.append(f"{name} {version} (verl wants {spec})")
    where = f"{sys.executable}: " + ", ".join(have)
    if bad:
        fix = (
            "run in the GPU environment: `make setup-gpu` on this node (requirements-gpu.txt + flash-attn), or "
            "PYTHON=/path/to/gpu/env/bin/python make ..."
            if gpu
            else "`make setup` (requirements.txt)"
        )
        return Finding("versions", "fail", where + "; " + "; ".join(bad), fix)
    return Finding("versions", "ok", where)


# --- attention --------------------------------------------------------------------------------------


def model_key(config: DictConfig) -> str:
    return "model" if launch.is_sft(config) else "actor_rollout_ref.model"


def attn_implementation(config: DictConfig) -> str:
    """What verl passes to from_pretrained: override_config.attn_implementation, default
    flash_attention_2 (verl/workers/config/model.py:185)."""
    value = OmegaConf.select(config, f"{model_key(config)}.override_config.attn_implementation")
    return str(value or "flash_attention_2")


def uses_flash_attention(config: DictConfig) -> bool:
    """flash_attention_2, or remove-padding (verl's Qwen-VL varlen path imports flash_attn)."""
    if launch.is_cpu(config):
        return False
    remove_padding = OmegaConf.select(config, f"{model_key(config)}.use_remove_padding")
    return attn_implementation(config) == "flash_attention_2" or bool(remove_padding)


def flash_attn_import_error() -> str | None:
    """None when flash-attn and its CUDA extension import against this torch, else the error."""
    try:
        import flash_attn  # noqa: F401
        import flash_attn_2_cuda  # noqa: F401  # the compiled part: fails for a build of another torch
    except Exception as exc:  # ImportError, OSError (undefined symbol, missing libcudart)
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


def check_attention(config: DictConfig, import_error: str | None | bool = False) -> Finding:
    """flash-attn imported, not only its metadata read (a wheel for another torch installs fine and then
    fails in every worker); the sdpa route named with its cost. `import_error` False: try the import."""
    if launch.is_cpu(config):
        return Finding("attention", "skip", f"CPU recipe ({attn_implementation(config)})")
    key = model_key(config)
    if not uses_flash_attention(config):
        length = (OmegaConf.select(config, "data.max_prompt_length") or 0) + (
            OmegaConf.select(config, "data.max_response_length") or 0
        )
        return Finding(
            "attention",
            "warn",
            f"{attn_implementation(config)} without remove-padding (no flash-attn needed): every sequence is "
            f"padded to max_prompt_length + max_response_length = {length} tokens in the actor and reference "
            "passes, so they compute and hold activations for the padding too (typically 1.5-3x the memory "
            "and time of flash_attention_2 with remove-padding on short answers)",
            "if the actor runs out of memory, lower actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu (and "
            "the log_prob ones); a matching flash-attn wheel (`make setup-gpu`) removes the cost",
        )
    if import_error is False:
        import_error = flash_attn_import_error()
    why = (
        f"{key}.override_config.attn_implementation={attn_implementation(config)}, "
        f"use_remove_padding={OmegaConf.select(config, f'{key}.use_remove_padding')}"
    )
    if import_error:
        return Finding(
            "attention",
            "fail",
            f"the recipe uses flash-attn ({why}) and it does not import here: {import_error}",
            "install the flash-attn wheel built for this torch / CUDA / Python (`make setup-gpu`, "
            'FLASH_ATTN_WHEEL=...), or the sdpa route: ARGS="' + " ".join(SDPA_OVERRIDES) + '"',
        )
    return Finding(
        "attention",
        "ok",
        f"flash-attn {installed_version('flash-attn')} imports, CUDA extension included ({why})",
    )


# --- vLLM engine kwargs ------------------------------------------------------------------------------


def pinned_engine_fields(path: Path = ENGINE_ARGS_FILE) -> set[str]:
    """The field list of the pinned vLLM (one name a line, `#` comments)."""
    return {
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
    }


def vllm_engine_fields() -> tuple[set[str] | None, str]:
    """vLLM's own EngineArgs fields when vLLM is importable; else the field list of the vLLM version verl
    pins (what the GPU environment installs: requirements-gpu.txt); (None, why) if that is another."""
    try:
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs
    except ImportError as exc:
        pinned = verl_requirements(GPU_EXTRAS).get("vllm", "")
        if pinned != f"=={PINNED_VLLM}":
            return None, f"vllm not importable here ({exc.__class__.__name__}) and verl pins vllm{pinned}"
        return pinned_engine_fields(), (
            f"vLLM {PINNED_VLLM}'s EngineArgs ({ENGINE_ARGS_FILE.name}; vLLM is not importable here)"
        )
    return {f.name for f in dataclasses.fields(EngineArgs)}, f"vLLM {installed_version('vllm')} EngineArgs"


def unknown_engine_kwargs(config: DictConfig, fields: set[str]) -> list[str]:
    """engine_kwargs.vllm keys vLLM would refuse (verl drops null values first,
    vllm_async_server.py:287-288)."""
    kwargs = OmegaConf.select(config, "actor_rollout_ref.rollout.engine_kwargs.vllm") or {}
    return sorted(k for k, v in kwargs.items() if v is not None and k not in fields)


def check_engine_kwargs(config: DictConfig, fields: set[str] | None = None) -> Finding:
    if launch.is_cpu(config) or launch.is_sft(config):
        return Finding("engine_kwargs", "skip", "no vLLM rollout in this recipe")
    if str(OmegaConf.select(config, "actor_rollout_ref.rollout.name")) != "vllm":
        return Finding("engine_kwargs", "skip", "rollout is not vLLM")
    source = "the given field list"
    if fields is None:
        fields, source = vllm_engine_fields()
        if fields is None:
            return Finding(
                "engine_kwargs",
                "fail",
                f"{source}: no field list to check actor_rollout_ref.rollout.engine_kwargs.vllm against",
                f"run the doctor in the GPU environment (`make setup-gpu`), or add that vLLM's field list "
                f"beside {ENGINE_ARGS_FILE.name}",
            )
    unknown = unknown_engine_kwargs(config, fields)
    if unknown:
        return Finding(
            "engine_kwargs",
            "fail",
            f"actor_rollout_ref.rollout.engine_kwargs.vllm has keys {source} does not know: {unknown} "
            "(vLLM stops with `unrecognized arguments`)",
            "remove them or use the vLLM option that replaced them (e.g. mm_processor_cache_gb)",
        )
    return Finding("engine_kwargs", "ok", f"every engine_kwargs.vllm key is in {source}")


# --- GPUs and the cluster ----------------------------------------------------------------------------


def wanted_gpus(config: DictConfig) -> tuple[int, int]:
    return int(config.trainer.nnodes), int(config.trainer.n_gpus_per_node)


def check_local_gpus(
    config: DictConfig, available: int | None = None, diagnosis: str | None = None
) -> Finding:
    nodes, per_node = wanted_gpus(config)
    if launch.is_cpu(config):
        return Finding("gpus", "skip", "CPU recipe (trainer.device=cpu)")
    if nodes > 1:
        return Finding(
            "gpus",
            "fail",
            f"trainer.nnodes={nodes} without a Ray cluster (RAY_ADDRESS unset)",
            "start Ray on the nodes and set RAY_ADDRESS=HEAD:6379, or `make submit`, or sbatch recipes/slurm/train.slurm",
        )
    available = launch.local_gpu_count() if available is None else available
    try:
        launch.check_gpus(config, available)
    except launch.LaunchError as err:
        if available:
            return Finding("gpus", "fail", str(err), f"GPUS={available}")
        problem = driver_problem() if diagnosis is None else diagnosis
        fix = DRIVER_FIX if "older than" in problem else ""  # else launch's message names the routes
        return Finding("gpus", "fail", f"{problem}. {err}" if problem else str(err), fix)
    return Finding("gpus", "ok", f"{available} GPU(s) visible, recipe wants {per_node}")


DRIVER_FIX = (
    "update the NVIDIA driver (torch 2.11's CUDA 13 needs >= 580), or use a GPU environment built for the "
    "CUDA your driver runs (README, GPU node); verl's container image carries CUDA's forward-compatibility "
    "libraries, which datacenter GPUs can use on an older driver"
)


def nvidia_driver_version() -> str | None:
    """The driver version nvidia-smi reports ('' when it runs but lists no GPU), None without nvidia-smi."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0] if out.returncode == 0 and lines else ""


def driver_problem(torch_cuda: str | None | bool = False, driver: str | None | bool = False) -> str:
    """Why torch sees no GPU, when the driver says so: none installed, or older than torch's CUDA needs
    (a CUDA 13 torch on a 570 driver reports no GPU at all). '' when the driver is not the reason or
    cannot be read. `torch_cuda`/`driver` False: read from torch and nvidia-smi."""
    if torch_cuda is False:
        import torch

        torch_cuda = torch.version.cuda
    if not torch_cuda:
        return "this torch is a CPU-only build (torch.version.cuda is None)"
    if driver is False:
        driver = nvidia_driver_version()
    if driver is None:
        return f"no NVIDIA driver here (nvidia-smi not found; torch is built for CUDA {torch_cuda})"
    if not driver:
        return ""
    need = MIN_DRIVER.get(int(str(torch_cuda).split(".")[0]))
    have = tuple(int(p) for p in driver.split(".") if p.isdigit())
    if need and have < need:
        return (
            f"NVIDIA driver {driver} is older than CUDA {torch_cuda} (this torch's build) needs "
            f"(>= {'.'.join(map(str, need))}), so torch sees no GPU"
        )
    return ""


def cluster_resources(address: str) -> tuple[int, float]:
    """(alive nodes, GPUs) of the Ray cluster at `address` (GCS host:port, or a dashboard http URL)."""
    if address.startswith("http"):
        from ray.util.state import list_nodes

        nodes = [n for n in list_nodes(address=address, limit=10000) if n.state == "ALIVE"]
        return len(nodes), sum(float((n.resources_total or {}).get("GPU", 0)) for n in nodes)
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return len(nodes), sum(float(n.get("Resources", {}).get("GPU", 0)) for n in nodes)


def wait_for_nodes(address: str, nodes: int, timeout: float, poll: float = 2.0) -> int:
    """Poll until `nodes` Ray nodes are alive at `address` (GCS host:port or dashboard URL); a
    LaunchError naming how many joined when `timeout` seconds pass first (the head may not be up yet)."""
    import time

    import ray

    deadline = time.monotonic() + timeout
    seen, last = 0, ""
    try:
        while True:
            try:
                if not address.startswith("http") and not ray.is_initialized():
                    _port_open(address)  # ray.init would retry for minutes on a head not up yet
                    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
                seen, _ = cluster_resources(address)
                last = ""
            except Exception as err:  # nothing listening yet
                seen, last = 0, f"{type(err).__name__}: {err}"
            if seen >= nodes:
                return seen
            if time.monotonic() > deadline:
                raise launch.LaunchError(
                    f"only {seen} of {nodes} Ray node(s) joined the cluster at {address} within {timeout:.0f} s"
                    + (f" ({last[:200]})" if last else "")
                    + ": see the nodes' `ray start` output"
                )
            time.sleep(poll)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def lost_nodes(address: str) -> list[str]:
    """The dead nodes of the Ray cluster at `address` (GCS host:port), each as `<node id> at <address>
    (<Ray's death reason>)`: after a failed run, what `recipes/train.sh` names (Ray's own error for a
    node lost mid-run is often an RPC error naming no node)."""
    with _connected(address):
        import ray

        dead = [n for n in ray.nodes() if not n.get("Alive")]
    from recipes.node_watch import describe

    return [describe(n) for n in dead]


def _port_open(address: str) -> None:
    import socket

    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2):
        pass


class _connected:
    """ray.init(address) for a GCS address (shut down after); nothing for a dashboard URL."""

    def __init__(self, address: str):
        self.address, self.started = address, False

    def __enter__(self):
        if self.address.startswith("http"):
            return self
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
            self.started = True
        return self

    def __exit__(self, *exc):
        if self.started:
            import ray

            ray.shutdown()


def check_cluster_gpus(config: DictConfig, address: str) -> Finding:
    nodes, per_node = wanted_gpus(config)
    with _connected(address):  # ray.nodes() needs a connection to a GCS address
        alive, gpus = cluster_resources(address)
    # verl's resource pool counts Ray "GPU" resources, one per trainer process, on a CPU recipe too
    # (verl/single_controller/ray/base.py:226-240)
    want = nodes * per_node
    if alive < nodes or gpus < want:
        slots = (
            " (a CPU recipe needs them as slots: `ray start --num-gpus=N`)" if launch.is_cpu(config) else ""
        )
        return Finding(
            "gpus",
            "fail",
            f"the Ray cluster at {address} has {alive} node(s) and {gpus:g} GPU(s); the recipe wants "
            f"trainer.nnodes={nodes} x trainer.n_gpus_per_node={per_node}{slots}",
            "wait for the nodes to join (`ray status`), or run with NODES/GPUS the cluster has",
        )
    return Finding("gpus", "ok", f"{alive} node(s), {gpus:g} GPU(s) at {address}")


def verl_runtime_env(config: DictConfig) -> dict:
    """The runtime_env verl's main_ppo passes to ray.init: its defaults merged with the recipe's
    ray_kwargs.ray_init.runtime_env (verl/trainer/main_ppo.py:64-72)."""
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    default = get_ppo_ray_runtime_env(config)
    extra = OmegaConf.select(config, "ray_kwargs.ray_init.runtime_env") or {}
    merged = OmegaConf.to_container(OmegaConf.merge(default, extra), resolve=True)
    return {k: v for k, v in merged.items() if v is not None or k == "working_dir"}


#: Variables that pin the interface of the trainer's collectives (torch's gloo, NCCL); forwarded to every
#: worker when set (launch.FORWARDED_ENV_NAMES). Ray 2.60 itself has no interface variable: a node's
#: address is `ray start --node-ip-address` (else the interface routing to the head).
INTERFACE_VARS = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")


def _fingerprint(path: str) -> list | None:
    """(size, sha256 of the first MiB) of a file: equal on every node when they share the file."""
    import hashlib as _hashlib
    import os as _os

    if not _os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        head = _hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
    return [_os.path.getsize(path), head]


def _interfaces() -> list[str]:
    """This node's up interfaces with an IPv4 address other than loopback."""
    import socket as _socket

    import psutil as _psutil

    stats = _psutil.net_if_stats()
    return sorted(
        name
        for name, addrs in _psutil.net_if_addrs().items()
        if stats.get(name) is not None
        and stats[name].isup
        and any(a.family == _socket.AF_INET and not a.address.startswith("127.") for a in addrs)
    )


def _probe_paths(config: DictConfig, shared: Sequence[str] = (), marker: str | None = None) -> dict:
    """What a worker sees (runs inside a Ray task, shipped by value: it needs nothing of this checkout
    to start): cwd, the reward function and replay buffer loaded with verl's own loaders, the data
    files, the metrics folder (created, as verl's FileLogger does not, tracking.py:534-541), the env;
    the fingerprints of the `shared` files (code, data, model: the driver compares them with its own),
    whether the driver's `marker` file in the checkpoint folder is visible here (every rank writes its
    shard there and resume reads all of them), and the network interfaces."""
    import os as _os

    from omegaconf import OmegaConf as _OC

    out: dict = {"cwd": _os.getcwd(), "problems": [], "env": {}}
    out["files"] = {path: _fingerprint(path) for path in shared}
    if marker is not None and not _os.path.isfile(marker):
        out["problems"].append(
            f"trainer.default_local_dir={_os.path.dirname(marker)}: a file the driver wrote there is not "
            "visible on this node (checkpoints must be on storage every node shares)"
        )
    out["interfaces"] = _interfaces()
    reward = _OC.select(config, "reward.custom_reward_function")
    if reward is not None and reward.get("path"):
        try:
            from verl.trainer.ppo.reward import get_custom_reward_fn

            get_custom_reward_fn(config)
        except Exception as err:
            out["problems"].append(
                f"reward.custom_reward_function.path={reward.path}: {type(err).__name__}: {err}"
            )
    sampler = _OC.select(config, "trainer.v1.sampler.custom_sampler")
    if sampler is not None and sampler.get("path"):
        try:
            from verl.utils.import_utils import load_extern_object

            load_extern_object(sampler.path, sampler.name)
        except Exception as err:
            out["problems"].append(
                f"trainer.v1.sampler.custom_sampler.path={sampler.path}: {type(err).__name__}: {err}"
            )
    if _OC.select(config, "assets.data") is None:  # recipes.tiny_assets builds the tiny recipes' data
        for key in ("data.train_files", "data.val_files"):
            value = _OC.select(config, key)
            for path in [value] if isinstance(value, str) else list(value or []):
                if not _os.path.exists(path):
                    out["problems"].append(f"{key}={path}: not found")
    metrics = _os.environ.get("VERL_FILE_LOGGER_PATH")
    if metrics:
        try:
            _os.makedirs(_os.path.dirname(_os.path.abspath(metrics)), exist_ok=True)
        except OSError as err:
            out["problems"].append(f"VERL_FILE_LOGGER_PATH={metrics}: {err}")
    for name in ("VERL_FILE_LOGGER_PATH", "PYTHONPATH", "WANDB_MODE", "HF_HUB_OFFLINE", *INTERFACE_VARS):
        out["env"][name] = _os.environ.get(name)
    return out


def shared_paths(config: DictConfig) -> list[str]:
    """Files every node must see as the same: the reward file and replay buffer (code), the data files,
    and the model folder's top-level files (config, weights, processor) when it is a local folder."""
    paths = []
    for key in launch.CODE_PATH_KEYS:
        value = OmegaConf.select(config, key)
        if isinstance(value, str) and Path(value).is_absolute():
            paths.append(value)
    for key in ("data.train_files", "data.val_files"):
        value = OmegaConf.select(config, key)
        paths += [str(v) for v in ([value] if isinstance(value, str) else list(value or []))]
    model = Path(str(OmegaConf.select(config, "actor_rollout_ref.model.path")))
    if model.is_absolute() and model.is_dir():
        paths += sorted(str(p) for p in model.iterdir() if p.is_file())
    return [p for p in paths if Path(p).is_file()]


def interface_warning(results: Sequence[tuple[str, dict]], driver_env: dict[str, str]) -> Finding | None:
    """A warning when a node has several network interfaces and nothing pins the one gloo/NCCL use:
    they may pick one the other nodes cannot reach (verl #7386), which shows as a hang or a timeout in
    the first collective."""
    pinned = any(driver_env.get(name) for name in INTERFACE_VARS)
    several = [(node, r.get("interfaces", [])) for node, r in results if len(r.get("interfaces", [])) > 1]
    if pinned or not several:
        return None
    named = "; ".join(f"{node}: {', '.join(names)}" for node, names in several)
    return Finding(
        "network",
        "warn",
        f"node(s) with several network interfaces and none pinned ({named})",
        "export GLOO_SOCKET_IFNAME=<iface> NCCL_SOCKET_IFNAME=<iface> (the launchers forward them to every "
        "worker) and start each Ray node with --node-ip-address=<that interface's address>",
    )


def run_probe(config: DictConfig, address: str, in_job: bool = False) -> list[tuple[str, dict]]:
    """_probe_paths in one Ray task on every alive node, under the runtime_env verl's main_ppo will
    pass to ray.init (main_ppo.py:64-72): what verl's workers will find there."""
    import uuid

    import cloudpickle
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    env = verl_runtime_env(config)
    resolved = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    shared = shared_paths(resolved)
    ckpt = Path(str(resolved.trainer.default_local_dir))
    marker = None
    if ckpt.is_absolute():  # a file of the driver's the workers must see
        ckpt.mkdir(parents=True, exist_ok=True)
        marker = ckpt / f".doctor-{uuid.uuid4().hex}"
        marker.write_text("written by recipes.doctor on the driver's node; removed after the probe\n")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import recipes
    try:
        with _connected(address):
            probe = ray.remote(num_cpus=0)(_probe_paths)
            nodes = [n for n in ray.nodes() if n.get("Alive")]
            refs = [
                probe.options(
                    # inside a submitted job the tasks inherit the job's runtime_env, as verl's workers do
                    **({} if in_job else {"runtime_env": env}),
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False),
                ).remote(resolved, shared, str(marker) if marker else None)
                for n in nodes
            ]
            results = ray.get(refs, timeout=300)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        if marker is not None:
            marker.unlink(missing_ok=True)
    # several nodes of one host share an address: the node id tells them apart
    return [
        (f"{n.get('NodeManagerAddress', '?')} (node {n['NodeID'][:8]})", r)
        for n, r in zip(nodes, results, strict=True)
    ]


def check_cluster_paths(launch_plan: launch.LaunchPlan, address: str, in_job: bool = False) -> Finding:
    results = run_probe(launch_plan.config, address, in_job=in_job)
    problems, wrong_env = [], []
    resolved = OmegaConf.create(OmegaConf.to_container(launch_plan.config, resolve=True))
    driver_files = {path: _fingerprint(path) for path in shared_paths(resolved)}
    for node, result in results:
        problems += [f"{node}: {p} (worker folder {result['cwd']})" for p in result["problems"]]
        for path, seen in result.get("files", {}).items():
            if seen is None:
                problems.append(f"{node}: {path}: not found (the driver has it)")
            elif seen != driver_files.get(path):
                problems.append(f"{node}: {path}: not the driver's file (size/content differ)")
        for name, value in launch_plan.env.items():
            if name in result["env"] and result["env"][name] != value:
                wrong_env.append(f"{node}: {name}={result['env'][name]!r}, driver {value!r}")
    if problems or wrong_env:
        return Finding(
            "cluster",
            "fail",
            "; ".join(problems + wrong_env),
            "run through `make train`/`make submit` (they pass paths absolute and the environment in "
            "ray_kwargs.ray_init.runtime_env), and keep data and the checkout on storage every node sees",
        )
    ok = Finding(
        "cluster",
        "ok",
        f"{len(results)} node(s): reward file, replay buffer, data files resolve in a worker; code, data and "
        f"model are the driver's files ({len(driver_files)} compared); checkpoint folder shared; "
        "environment arrives; metrics folder exists",
    )
    network = interface_warning(results, {**os.environ, **launch_plan.env})
    return [ok, network] if network else ok


#: What a probe job prints before its findings (JSON), for `check_submitted_paths` to find in its logs.
PROBE_MARK = "# doctor probe findings: "
PROBE_ENV = "IMAGEEDIT_DOCTOR_PROBE"


def check_submitted_paths(
    launch_plan: launch.LaunchPlan, address: str, timeout: float = 300
) -> list[Finding]:
    """`make submit`'s workers probed where they will run: a small Ray job with the very runtime_env the
    training job gets (`launch.submit_spec`: the uploaded checkout, the forwarded environment) runs the
    per-node probe of `check_cluster_paths` on every node (code, data, model files the same as on the
    job's driver node, the checkpoint folder shared, the environment, the interfaces). The recipe and
    overrides travel in the job's environment, so the probe job's entry point names no run."""
    import json
    import time

    from ray.job_submission import JobStatus, JobSubmissionClient

    spec = launch.submit_spec(launch_plan)
    spec["env_vars"][PROBE_ENV] = json.dumps(
        {"recipe": launch_plan.recipe, "overrides": launch_plan.overrides}
    )
    python = os.environ.get("SUBMIT_PYTHON", "python")
    client = JobSubmissionClient(address)
    job = client.submit_job(entrypoint=f"{python} -m recipes.doctor --probe-job", runtime_env=spec)
    deadline = time.monotonic() + timeout
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > deadline:
            client.stop_job(job)
            return [Finding("cluster", "fail", f"the probe job {job} did not finish in {timeout:.0f} s")]
        time.sleep(1)
    logs = client.get_job_logs(job)
    lines = [line for line in logs.splitlines() if line.startswith(PROBE_MARK)]
    if not lines:
        return [Finding("cluster", "fail", f"the probe job {job} printed no findings: {logs[-1500:]}")]
    return [Finding(**f) for f in json.loads(lines[-1][len(PROBE_MARK) :])]


def probe_job_main() -> int:
    """Inside the probe job of `check_submitted_paths`: the per-node probe, its findings as JSON."""
    import json
    from dataclasses import asdict

    given = json.loads(os.environ[PROBE_ENV])
    config = launch.compose(given["recipe"], given["overrides"])
    env = launch.worker_env(config)
    env.pop("PYTHONPATH", None)  # the job's working_dir is on its workers' sys.path
    plan = launch.LaunchPlan(given["recipe"], given["overrides"], config, [], env)
    from recipes import doctor  # this module by its name, not __main__: the probe ships by value from it

    try:
        findings = _as_list(doctor.check_cluster_paths(plan, "auto", in_job=True))
    except Exception as err:
        findings = [Finding("cluster", "fail", f"{type(err).__name__}: {err}")]
    for f in findings:
        f.detail = "job's " + f.detail if f.status == "ok" else f.detail
    print(PROBE_MARK + json.dumps([asdict(f) for f in findings]), flush=True)
    return 0


# --- image budget and prompt lengths -----------------------------------------------------------------


def check_image_budget(config: DictConfig) -> Finding:
    from data_prep import budget

    if launch.is_sft(config):
        return Finding("image_budget", "skip", "SFT recipe")
    if launch.is_cpu(config) and budget.recipe_budget(config).max_pixels is None:
        return Finding("image_budget", "skip", "CPU recipe without an image bound (tiny images)")
    problem = budget.recipe_budget_problem(config)
    if problem:
        return Finding("image_budget", "fail", problem, "fix the model group's image_budget")
    b = budget.recipe_budget(config)
    if b.max_pixels is None:
        return Finding(
            "image_budget",
            "warn",
            f"no data.mm_processor_kwargs.max_pixels: images up to 16,384 tokens, max_prompt_length {b.max_prompt_length}",
            "set image_budget.max_pixels in the model group (data_prep/budget.py)",
        )
    return Finding(
        "image_budget",
        "ok",
        f"max_pixels {b.max_pixels} = {b.image_tokens_max} image tokens + {b.text_tokens} text <= "
        f"max_prompt_length {b.max_prompt_length}",
    )


def model_path(config: DictConfig) -> str:
    """The policy's weights: a local folder or a hub id (the SFT trainer keeps it at model.path)."""
    return str(
        OmegaConf.select(config, "model.path" if launch.is_sft(config) else "actor_rollout_ref.model.path")
    )


def check_model(
    config: DictConfig, environ: dict[str, str] | None = None, cache_dir: str | None = None
) -> Finding:
    """The weights are there before verl starts Ray: a local folder, or a hub id in the HF cache when
    downloads are off (HF_HUB_OFFLINE=1, recipes/env.sh's default); transformers would otherwise fail
    in every worker after Ray and vLLM started."""
    environ = os.environ if environ is None else environ
    path = model_path(config)
    if Path(path).expanduser().is_dir():
        problem = weights_problem(Path(path).expanduser())
        if problem:
            return Finding("model", "fail", f"{path}: {problem}", "copy the complete model folder there")
        return Finding("model", "ok", f"{path} (local folder, weights complete)")
    if OmegaConf.select(config, "assets.model") is not None:
        return Finding("model", "skip", f"{path} not built yet (recipes.tiny_assets builds it)")
    if path.startswith(("/", ".", "~")) or launch.is_local_path(path) or path.count("/") != 1:
        return Finding(
            "model", "fail", f"model folder not found: {path}", "build or copy it there, or name a hub id"
        )
    from huggingface_hub import try_to_load_from_cache

    offline = environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")
    cached = try_to_load_from_cache(path, "config.json", cache_dir=cache_dir)
    if isinstance(cached, str):
        problem = weights_problem(Path(cached).parent)
        if not problem:
            return Finding("model", "ok", f"{path} (in the HF cache, weights complete)")
        if offline:
            return Finding(
                "model",
                "fail",
                f"{path} is in the HF cache without all its weights ({problem}) and downloads are off",
                f"`huggingface-cli download {path}` again (it resumes), into an HF_HOME every node shares",
            )
        return Finding("model", "warn", f"{path}: {problem} in the HF cache: every node downloads the rest")
    if offline:
        return Finding(
            "model",
            "fail",
            f"{path} is not in the HF cache and downloads are off (HF_HUB_OFFLINE=1, recipes/env.sh)",
            f"`huggingface-cli download {path}` into an HF_HOME every node shares, or HF_HUB_OFFLINE=0 to let "
            "each process download it",
        )
    return Finding("model", "warn", f"{path} is not in the HF cache: every node downloads it at start")


WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def weight_files(folder: Path) -> list[Path]:
    """The weight files a HF folder's index names (or its single file); [] when it has neither."""
    import json

    for index in WEIGHT_INDEXES:
        if (folder / index).is_file():
            names = sorted(set(json.loads((folder / index).read_text()).get("weight_map", {}).values()))
            return [folder / name for name in names]
    return [folder / name for name in WEIGHT_FILES if (folder / name).exists()]


def weights_problem(folder: Path) -> str:
    """'' when config.json and every weight file are there, else what is missing (config.json alone
    passed before: a download cut short then fails in every worker after Ray and vLLM started)."""
    if not (folder / "config.json").is_file():
        return "no config.json"
    files = weight_files(folder)
    if not files:
        return f"no weights ({' / '.join(WEIGHT_INDEXES + WEIGHT_FILES)})"
    missing = [f.name for f in files if not f.is_file()]  # a cache's dangling link counts as missing
    if missing:
        return f"{len(missing)} of {len(files)} weight files missing ({', '.join(missing[:3])}...)"
    return ""


def local_model_folder(config: DictConfig, cache_dir: str | None = None) -> Path | None:
    """The policy's folder on this machine: the local path, or its HF cache snapshot; None if neither."""
    path = model_path(config)
    if Path(path).expanduser().is_dir():
        return Path(path).expanduser()
    if path.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(path, "config.json", cache_dir=cache_dir)
    return Path(cached).parent if isinstance(cached, str) else None


# --- checkpoint disk ---------------------------------------------------------------------------------

#: Bytes a parameter takes in a verl FSDP checkpoint: fp32 weights (4) + Adam's two fp32 moments (8).
CKPT_BYTES_PER_PARAM = {"model": 4, "optimizer": 8}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
#: Parameter counts the hub's model pages give for the recipes' policies, for an estimate on a machine
#: without the weights (a laptop's DRY_RUN or `make submit`).
MODEL_CARD_PARAMETERS = {
    "Qwen/Qwen2.5-VL-7B-Instruct": 8_290_000_000,
    "Qwen/Qwen2.5-VL-3B-Instruct": 3_750_000_000,
    "Qwen/Qwen3-VL-8B-Instruct": 8_770_000_000,
}


def parameter_count(folder: Path) -> int | None:
    """Parameters from the weight files' size and the config's dtype (None if unreadable)."""
    import json

    files = weight_files(folder)
    if not files or not all(f.is_file() for f in files):
        return None
    config = json.loads((folder / "config.json").read_text())
    dtype = config.get("torch_dtype") or config.get("dtype") or (config.get("text_config") or {}).get("dtype")
    return sum(f.stat().st_size for f in files) // DTYPE_BYTES.get(str(dtype), 2)


def check_checkpoints(config: DictConfig, params: int | None = None, free: int | None = None) -> Finding:
    """One checkpoint's size from the policy's parameter count, times the ones kept
    (trainer.max_actor_ckpt_to_keep; verl keeps all when null), against the free disk there."""
    import shutil

    if launch.is_sft(config):
        keep_key, contents = "trainer.max_ckpt_to_keep", ["model", "optimizer"]
    else:
        keep_key = "trainer.max_actor_ckpt_to_keep"
        contents = list(OmegaConf.select(config, "actor_rollout_ref.actor.checkpoint.save_contents") or [])
    keep = OmegaConf.select(config, keep_key)
    steps = OmegaConf.select(config, "trainer.total_training_steps")
    freq = int(OmegaConf.select(config, "trainer.save_freq") or -1)
    saves = (int(steps) // freq + (int(steps) % freq != 0)) if steps and freq > 0 else None
    source = ""
    if params is None:
        folder = local_model_folder(config)
        params = parameter_count(folder) if folder else None
    if params is None and model_path(config) in MODEL_CARD_PARAMETERS:
        params, source = MODEL_CARD_PARAMETERS[model_path(config)], " (its model card; weights not here)"
    if params is None:
        return Finding(
            "checkpoints",
            "skip",
            f"the policy's weights are not on this machine: size unknown ({keep_key}={keep})",
        )
    each = params * sum(CKPT_BYTES_PER_PARAM.get(c, 0) for c in contents)
    kept = min(int(keep), saves or int(keep)) if keep is not None else saves
    root = Path(str(config.trainer.default_local_dir))
    if free is None:
        probe = root if root.is_absolute() else launch.REPO_ROOT / root
        while not probe.exists():
            probe = probe.parent
        free = shutil.disk_usage(probe).free
    total = each * kept if kept is not None else None
    detail = (
        f"~{each / 1e9:.1f} GB per checkpoint ({params / 1e9:.2f}B parameters{source} x "
        f"{sum(CKPT_BYTES_PER_PARAM.get(c, 0) for c in contents)} bytes: {'+'.join(contents)}), "
        f"{keep_key}={keep}"
        + (f" -> ~{total / 1e9:.1f} GB for {kept} checkpoint(s)" if total is not None else " (all kept)")
        + f" in {root}; {free / 1e9:.0f} GB free there"
    )
    if keep is None:
        return Finding(
            "checkpoints", "warn", detail, f"set {keep_key}=2 (verl keeps every checkpoint when null)"
        )
    if total is not None and total > free:
        return Finding(
            "checkpoints", "warn", detail, f"free disk there, lower {keep_key}, or raise trainer.save_freq"
        )
    return Finding("checkpoints", "ok", detail)


def load_processor(config: DictConfig):
    """The model's processor from a local folder or the HF cache (never downloads); None if absent."""
    path = str(OmegaConf.select(config, "actor_rollout_ref.model.path"))
    try:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, local_files_only=True)
    except Exception:
        return None


def check_prompt_lengths(config: DictConfig, allow_overlong: bool, processor=None) -> Finding:
    from data_prep import budget

    if launch.is_sft(config):
        return Finding("prompt_lengths", "skip", "SFT recipe")
    keyed = {}  # data.train_files and data.val_files: verl filters both the same way
    for key in ("data.train_files", "data.val_files"):
        value = OmegaConf.select(config, key)
        keyed[key] = [value] if isinstance(value, str) else list(value or [])
    missing = {key: [f for f in files if not Path(f).exists()] for key, files in keyed.items()}
    missing = {key: files for key, files in missing.items() if files}
    if missing:
        if OmegaConf.select(config, "assets.data") is not None:
            first = next(iter(missing.values()))[0]
            return Finding("prompt_lengths", "skip", f"{first} not built yet (recipes.tiny_assets builds it)")
        return Finding(
            "prompt_lengths",
            "fail",
            "; ".join(f"{key} not found: {files}" for key, files in missing.items()),
            "build them with `python -m data_prep.build rl ...` or point data.train_files / data.val_files at them",
        )
    processor = processor or load_processor(config)
    if processor is None:  # no count without the processor: a silent pass here was a false pass
        return Finding(
            "prompt_lengths",
            "warn" if allow_overlong else "fail",
            f"the processor of {config.actor_rollout_ref.model.path} is not on this machine (HF cache or "
            "folder): the rows over max_prompt_length, which verl drops with only a printed count, are uncounted",
            f"`huggingface-cli download {config.actor_rollout_ref.model.path}` (the processor files suffice) or "
            "point actor_rollout_ref.model.path at a local folder; ALLOW_OVERLONG=1 starts without the count",
        )
    limit = int(config.data.max_prompt_length)
    filtering = bool(OmegaConf.select(config, "data.filter_overlong_prompts"))
    over, fine = [], []
    for key, files in keyed.items():
        if not files:
            continue
        result = budget.overlong_rows(files, processor, config.data)
        if result.overlong:
            over.append(f"{key}: {result.summary(limit)}")
        else:
            fine.append(f"{key}: all {result.rows} rows fit (longest {result.longest})")
    if over:
        what = (
            "verl's overlong filter would drop"
            if filtering
            else "over max_prompt_length (no filter: verl fails)"
        )
        return Finding(
            "prompt_lengths",
            "warn" if allow_overlong and filtering else "fail",
            f"{what} " + "; ".join(over),
            "rebuild with `python -m data_prep.build rl --max-pixels N` (N = image_budget.max_pixels), or raise "
            "data.max_prompt_length; ALLOW_OVERLONG=1 starts anyway",
        )
    return Finding("prompt_lengths", "ok", f"max_prompt_length {limit}: " + "; ".join(fine))


# --- settings with no effect -------------------------------------------------------------------------


def check_settings(config: DictConfig) -> list[Finding]:
    out = []
    if launch.is_sft(config):
        return out
    truncation = OmegaConf.select(config, "data.truncation")
    if truncation not in (None, "error"):
        out.append(
            Finding(
                "settings",
                "warn",
                f"data.truncation={truncation} has no effect: verl 0.9.1's RL dataset never reads it "
                "(rl_dataset.py:118); overlong prompts are filtered (data.filter_overlong_prompts)",
                "remove it",
            )
        )
    if OmegaConf.select(config, "actor_rollout_ref.ref.fsdp_config.param_offload"):
        out.append(
            Finding(
                "settings",
                "warn",
                "actor_rollout_ref.ref.fsdp_config.param_offload is ignored: verl always CPU-offloads the "
                "reference model (workers/engine/fsdp/transformer_impl.py:429-435, 459-462)",
                "remove it",
            )
        )
    rollout = OmegaConf.select(config, "actor_rollout_ref.rollout")
    if rollout is not None and rollout.get("enable_chunked_prefill") is False:
        out.append(
            Finding(
                "settings",
                "warn",
                "rollout.enable_chunked_prefill=false: verl raises max_num_batched_tokens to max_model_len "
                "(vllm_async_server.py:1111-1119), so max_num_batched_tokens is not what you set",
                "leave chunked prefill on (verl's default)",
            )
        )
    return out


def check_secrets(environ: dict[str, str]) -> list[Finding]:
    """On a cluster started elsewhere, secrets set here reach the driver only (`launch.worker_env`
    leaves them out of verl's ray.init arguments, which verl prints, main_ppo.py:76)."""
    names = sorted(n for n in environ if n.startswith(launch.FORWARDED_ENV_PREFIXES) and launch.is_secret(n))
    if not names:
        return []
    return [
        Finding(
            "secrets",
            "warn",
            f"{', '.join(names)} reach the driver only, not the cluster's workers (W&B logs from a worker)",
            "`wandb login` on storage every node sees (~/.netrc), export them before `ray start`, or `make submit`",
        )
    ]


# --- all of it ---------------------------------------------------------------------------------------


def _as_list(found: Finding | list[Finding]) -> list[Finding]:
    return found if isinstance(found, list) else [found]


def run_checks(
    launch_plan: launch.LaunchPlan,
    route: str = "train",
    address: str | None = None,
    dry_run: bool = False,
    allow_overlong: bool | None = None,
    engine_fields: set[str] | None = None,
) -> list[Finding]:
    """Every check for a launch plan; a check that raises is a failure naming the exception."""
    config = launch_plan.config
    if allow_overlong is None:
        allow_overlong = os.environ.get("ALLOW_OVERLONG", "") not in ("", "0")
    # `make submit` runs the job in the cluster's interpreter with the cluster's HF cache: this machine's
    # packages and cache say nothing about them
    elsewhere = "the job runs in the cluster's python and HF cache, not this machine's"
    checks = [
        (
            "versions",
            lambda: [Finding("versions", "skip", elsewhere) if route == "submit" else check_versions(config)],
        ),
        (
            "attention",
            lambda: [
                Finding("attention", "skip", elsewhere) if route == "submit" else check_attention(config)
            ],
        ),
        ("engine_kwargs", lambda: [check_engine_kwargs(config, engine_fields)]),
        ("gpus", lambda: [check_cluster_gpus(config, address) if address else check_local_gpus(config)]),
        (
            "model",
            lambda: [Finding("model", "skip", elsewhere) if route == "submit" else check_model(config)],
        ),
        ("checkpoints", lambda: [check_checkpoints(config)]),
        ("image_budget", lambda: [check_image_budget(config)]),
        ("prompt_lengths", lambda: [check_prompt_lengths(config, allow_overlong)]),
        ("settings", lambda: check_settings(config)),
    ]
    if address and route == "train" and not address.startswith("http"):
        checks.append(("cluster", lambda: _as_list(check_cluster_paths(launch_plan, address))))
        checks.append(("secrets", lambda: check_secrets(os.environ)))
    elif address and route == "submit" and not dry_run:
        checks.append(("cluster", lambda: check_submitted_paths(launch_plan, address)))
    elif address:
        why = (
            "DRY_RUN: the workers are probed by a small Ray job when you submit"
            if route == "submit"
            else "RAY_ADDRESS is a dashboard URL: the per-node probe needs the GCS address (HOST:6379)"
        )
        checks.append(("cluster", lambda: [Finding("cluster", "skip", why)]))
    findings: list[Finding] = []
    for name, check in checks:
        try:
            findings += check()
        except Exception as err:  # a check that cannot run is a finding, not a traceback
            findings.append(Finding(name, "fail", f"{type(err).__name__}: {err}"))
    if dry_run:  # a laptop dry-runs the GPU recipe: what depends on this machine only warns
        for f in findings:
            if f.status == "fail" and f.check in MACHINE_CHECKS:
                f.status = "warn"
                f.detail += " [DRY_RUN: not this machine's job]"
    return findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.doctor",
        description="Preflight of a recipe on this machine / cluster (make doctor). Defaults from RECIPE, "
        "NODES, GPUS, RAY_ADDRESS, DRY_RUN, ALLOW_OVERLONG.",
    )
    parser.add_argument("--recipe", default=os.environ.get("RECIPE") or launch.DEFAULTS["DEFAULT_RECIPE"])
    parser.add_argument(
        "--nodes", type=launch.int_or_none, default=launch.int_or_none(os.environ.get("NODES"))
    )
    parser.add_argument("--gpus", type=launch.int_or_none, default=launch.int_or_none(os.environ.get("GPUS")))
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None)
    parser.add_argument("--route", choices=["train", "submit"], default="train")
    parser.add_argument(
        "--dry-run", action="store_true", default=os.environ.get("DRY_RUN", "") not in ("", "0")
    )
    parser.add_argument(
        "--wait-nodes", type=int, default=None, help="only wait until this many Ray nodes joined --address"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for --wait-nodes")
    parser.add_argument("--probe-job", action="store_true", help=argparse.SUPPRESS)  # check_submitted_paths
    parser.add_argument(
        "--lost-nodes",
        action="store_true",
        help="name the dead nodes of the cluster at --address (after a failed run)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for make train")
    args = parser.parse_args(argv)
    if args.probe_job:
        return probe_job_main()
    if args.address:  # a client of a running cluster: the token mode its head may use (launch.ray_auth_env)
        os.environ.update(launch.ray_auth_env(args.address))
    if args.lost_nodes:
        try:
            dead = lost_nodes(args.address)
        except Exception as err:
            print(
                f"error: could not ask the Ray cluster at {args.address} which nodes died: {err}",
                file=sys.stderr,
            )
            return 2
        for node in dead:
            print(f"error: Ray node {node} was lost", file=sys.stderr)
        if dead:
            print(
                "fix: bring the node back (or start with fewer NODES) and rerun the same command: verl resumes "
                "from the last complete checkpoint in trainer.default_local_dir",
                file=sys.stderr,
            )
        return 0
    try:
        if args.wait_nodes is not None:
            if not args.address:
                raise launch.LaunchError("--wait-nodes needs --address (or RAY_ADDRESS)")
            seen = wait_for_nodes(args.address, args.wait_nodes, args.timeout)
            print(f"{seen} Ray node(s) joined {args.address}", flush=True)
            return 0
        plan = launch.plan(args.recipe, args.overrides, args.nodes, args.gpus, route=args.route)
    except launch.LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # Hydra composition
        print(f"error: recipe {args.recipe!r} with overrides {args.overrides}: {err}", file=sys.stderr)
        return 2
    findings = run_checks(plan, route=args.route, address=args.address, dry_run=args.dry_run)
    print(report(findings), flush=True)
    return 2 if failed(findings) else 0


if __name__ == "__main__":
    sys.exit(main())
