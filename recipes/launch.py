"""Turn a recipe name plus Hydra overrides into the exact training command, checked before it starts.

Used by recipes/train.sh and recipes/submit.sh. A recipe is a verl config (recipes/config/), so the GPU
command is verl's own `python -m verl.trainer.main_ppo --config-path ... --config-name ...`; a recipe
with `trainer.device: cpu` runs the same trainer on this CPU through the recipes/verl_cpu plugin. The
checks here fail in seconds where verl would fail after starting Ray, or hang:
- no GPU on this node (verl: "Total available GPUs 0 is less than total desired GPUs N"),
- `ray_kwargs.ray_init.num_cpus` too low for verl's actors (verl: hangs with no error),
- with DRY_RUN, verl's own `validate_config`, called exactly as `verl.trainer.main_ppo.main` calls it,
and `recipes.doctor`'s preflight (versions, vLLM engine kwargs, GPUs, cluster, image budget) on every route.
Every recipe goes through the same plan: paths made absolute (`local_path_overrides`), the environment
workers need (`worker_env`) given to the driver and to verl's `ray_kwargs.ray_init.runtime_env.env_vars`.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "recipes" / "config"
#: How verl's main finds the recipes from any working directory (also in a Ray job's uploaded copy).
CONFIG_PKG = "pkg://recipes.config"
RUNTIME_ENV_FILE = REPO_ROOT / "recipes" / "runtime_env.yaml"
GPU_ENTRY = "verl.trainer.main_ppo"
SFT_ENTRY = "verl.trainer.sft_trainer"
#: The paper's recipe on a CPU: verl's own trainer through the recipes/verl_cpu plugin.
CPU_RECIPE = "imageedit_r1_tiny"
DEFAULT_RAY_ADDRESS = "http://127.0.0.1:8265"
#: Environment variables a submitted job takes along (besides those named in runtime_env.yaml).
FORWARDED_ENV_PREFIXES = ("WANDB_", "HF_", "TRANSFORMERS_", "VERL_")
#: GLOO_/NCCL_SOCKET_IFNAME pin the network interface of the trainer's collectives on multi-NIC nodes
#: (recipes/multinode.md); forwarded when set.
FORWARDED_ENV_NAMES = ("TOKENIZERS_PARALLELISM", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
#: Printed as *** (they still reach the job, through a file only the user can read).
SECRET_SUFFIXES = ("KEY", "TOKEN", "SECRET", "PASSWORD")
#: Config keys naming local files or folders. verl opens them relative to each Ray worker's current
#: folder (verl/utils/import_utils.py:177-178 for the reward file and replay buffer), and it forces
#: `working_dir: None` outside a Ray job (verl/trainer/constants_ppo.py:114-121): on a cluster started
#: from another folder a relative path names nothing. The launcher passes them absolute.
CODE_PATH_KEYS = (
    "reward.custom_reward_function.path",
    "trainer.v1.sampler.custom_sampler.path",
    "data.custom_cls.path",
)
OUTPUT_PATH_KEYS = ("trainer.default_local_dir",)
DATA_PATH_KEYS = (
    "data.train_files",
    "data.val_files",
    "actor_rollout_ref.model.path",
    "assets.data.dir",
    "assets.model.dir",
    *OUTPUT_PATH_KEYS,
)
#: verl's runtime_env key for the variables of every Ray worker (main_ppo.py:64-72 merges it over
#: verl's own defaults and passes it to ray.init).
RUNTIME_ENV_VARS_KEY = "ray_kwargs.ray_init.runtime_env.env_vars"


def read_defaults(path: Path = REPO_ROOT / "recipes" / "defaults.env") -> dict[str, str]:
    """recipes/defaults.env (KEY=VALUE lines, # comments): the launch defaults the Makefile and the
    shell launchers read too."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


DEFAULTS = read_defaults()
ENV_SCRIPT = REPO_ROOT / "recipes" / "env.sh"


def launch_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment recipes/env.sh (its one definition) makes from `environ`: what `make train` and
    the launchers run in, so `python -m recipes.launch` called directly (make demo, make bench) gets
    the same PYTHONPATH, HF offline and W&B modes."""
    environ = dict(os.environ if environ is None else environ)
    out = subprocess.run(
        ["bash", str(ENV_SCRIPT), "env", "-0"], env=environ, capture_output=True, check=True, timeout=30
    )
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


class LaunchError(RuntimeError):
    """A recipe that cannot run here, with the reason and what to do instead."""


@dataclass
class LaunchPlan:
    """What a launcher runs: the composed config and the command line."""

    recipe: str
    overrides: list[str]
    config: DictConfig
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def on_cpu(self) -> bool:
        return is_cpu(self.config)


def recipe_names() -> list[str]:
    """The recipes: top-level YAML files of recipes/config/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def compose(recipe: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The fully composed verl config of a recipe, as `main_ppo --cfg job` prints it (unresolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if recipe not in recipe_names():
        raise LaunchError(f"unknown recipe {recipe!r}; recipes in {CONFIG_DIR}: {', '.join(recipe_names())}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(config_name=recipe, overrides=list(overrides))


def cpu_twin(config: DictConfig) -> str:
    """The tiny CPU recipe on the same verl trainer (SFT or GRPO)."""
    return "sft_tiny" if is_sft(config) else CPU_RECIPE


def is_cpu(config: DictConfig) -> bool:
    return str(config.trainer.device) == "cpu"


def is_sft(config: DictConfig) -> bool:
    """A recipe on verl's SFT trainer config (sft_trainer_engine) rather than ppo_trainer."""
    return "actor_rollout_ref" not in config and OmegaConf.select(config, "data.messages_key") is not None


def cluster_overrides(config: DictConfig, nodes: int | None, gpus: int | None) -> list[str]:
    """NODES/GPUS as verl overrides. A CPU recipe is one trainer process on one node (the Makefile's
    GPUS=8 default is not for it) unless NODES > 1 asks for a cluster: then both apply, GPUS being the
    "GPU" slots (trainer processes) each node advertises (`ray start --num-gpus`)."""
    if is_cpu(config) and not (nodes or 1) > 1:
        return []
    out = []
    if nodes is not None:
        out.append(f"trainer.nnodes={nodes}")
    if gpus is not None:
        out.append(f"trainer.n_gpus_per_node={gpus}")
    return out


def training_command(recipe: str, overrides: Sequence[str], config: DictConfig, python: str) -> list[str]:
    """verl's own trainer, on GPUs and (`trainer.device: cpu`, through recipes/verl_cpu) on a CPU alike."""
    recipe_args = ["--config-path", CONFIG_PKG, "--config-name", recipe, *overrides]
    if is_sft(config):  # verl's SFT trainer is a torchrun program, one process per GPU
        if int(config.trainer.nnodes) != 1:
            raise LaunchError(
                f"SFT recipe {recipe!r} asks for trainer.nnodes={config.trainer.nnodes}: `make train` runs SFT "
                f"on one node (torchrun --standalone); for several nodes run torchrun with a rendezvous "
                f"yourself: torchrun --nnodes=N --rdzv-endpoint=HEAD:29500 -m {SFT_ENTRY} "
                + shlex.join(recipe_args)
            )
        torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
        return [
            *torchrun,
            f"--nproc-per-node={config.trainer.n_gpus_per_node}",
            "-m",
            SFT_ENTRY,
            *recipe_args,
        ]
    return [python, "-m", GPU_ENTRY, *recipe_args]


def run_dir(config: DictConfig) -> Path:
    """Where a run's metrics.jsonl goes, absolute: `eval curves` reads it there whichever folder the
    trainer's processes run in."""
    path = Path("outputs") / "runs" / str(config.trainer.experiment_name)
    return path if path.is_absolute() else REPO_ROOT / path


def metrics_path(config: DictConfig, environ: dict[str, str] | None = None) -> Path:
    """verl's `file` logger target (VERL_FILE_LOGGER_PATH; the user's value wins), made absolute."""
    environ = os.environ if environ is None else environ
    given = environ.get("VERL_FILE_LOGGER_PATH")
    path = Path(given) if given else run_dir(config) / "metrics.jsonl"
    return path if path.is_absolute() else REPO_ROOT / path


#: verl imports it in every process (VERL_USE_EXTERNAL_MODULES): its file logger appends across restarts.
METRICS_LOG_MODULE = "recipes.metrics_log"
#: Likewise: the trainer's W&B table of validation samples with their images (`val/samples`).
VALIDATION_SAMPLES_MODULE = "recipes.validation_samples"
#: In the run's checkpoint folder (what verl resumes from, so what identifies the run): the W&B run id
#: every attempt of the run resumes (WANDB_RUN_ID).
WANDB_ID_FILE = "wandb_run_id"


def checkpoint_dir(config: DictConfig) -> Path:
    """trainer.default_local_dir, absolute (relative to the checkout, as the launcher passes it)."""
    folder = Path(str(config.trainer.default_local_dir))
    return folder if folder.is_absolute() else REPO_ROOT / folder


def resumes(config: DictConfig) -> bool:
    """Whether verl will resume this run from a checkpoint, by verl's own rule
    (`trainer_base._load_checkpoint`: resume_mode auto finds latest_checkpointed_iteration.txt in
    trainer.default_local_dir; resume_path names one). What this machine sees: for `make submit` the
    checkpoint folder must be on storage it shares with the cluster."""
    mode = str(OmegaConf.select(config, "trainer.resume_mode") or "disable")
    if mode == "resume_path":
        return bool(OmegaConf.select(config, "trainer.resume_from_path"))
    if mode != "auto":
        return False
    from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path

    return find_latest_ckpt_path(str(checkpoint_dir(config))) is not None


_NEW_WANDB_IDS: dict[Path, str] = {}


def wandb_resume_env(config: DictConfig, environ: dict[str, str]) -> dict[str, str]:
    """WANDB_RUN_ID + WANDB_RESUME=allow, so a resumed run continues its W&B run (wandb.init reads both
    from the environment; verl's Tracking passes neither, tracking.py:85). The id is the one in the
    checkpoint folder's wandb_run_id when verl resumes from that folder, a new one when it starts from
    scratch; the user's WANDB_RUN_ID wins. `start_run_files` writes the file when the run starts."""
    if environ.get("WANDB_RUN_ID"):
        return {}
    id_file = checkpoint_dir(config) / WANDB_ID_FILE
    known = id_file.read_text().strip() if id_file.is_file() else ""
    if not (known and resumes(config)):  # a new W&B run: one id per checkpoint folder in this process
        import uuid

        known = _NEW_WANDB_IDS.setdefault(id_file, uuid.uuid4().hex[:12])
    return {"WANDB_RUN_ID": known, "WANDB_RESUME": environ.get("WANDB_RESUME") or "allow"}


def external_modules(config: DictConfig, environ: dict[str, str]) -> str:
    """VERL_USE_EXTERNAL_MODULES for every process: the appending metrics logger, the validation-samples
    table, the user's own modules, and the CPU plugin for a CPU recipe only (a GPU recipe's workers never
    load it, whatever the shell holds)."""
    from recipes.verl_cpu import PLUGIN_MODULE

    given = [m.strip() for m in environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",") if m.strip()]
    ours = (METRICS_LOG_MODULE, VALIDATION_SAMPLES_MODULE)
    mine = [*ours, *([PLUGIN_MODULE] if is_cpu(config) else [])]
    return ",".join([*mine, *(m for m in given if m not in (*ours, PLUGIN_MODULE))])


def is_secret(name: str) -> bool:
    return name.upper().rsplit("_", 1)[-1] in SECRET_SUFFIXES


def worker_env(config: DictConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Every environment variable that must reach the trainer's processes, driver and Ray workers alike.

    `make train` exports them to the driver and adds them to verl's ray_kwargs.ray_init.runtime_env.
    env_vars (a Ray cluster started elsewhere gives its workers the environment of `ray start`, not
    ours); `make submit` puts them in the job's runtime_env. Secret-named variables (*_KEY, *_TOKEN, ..)
    are left out here: verl prints its ray.init arguments (main_ppo.py:76); `make submit` still
    forwards them through its owner-only runtime_env file (`runtime_env`). The values are those of the
    launch environment (recipes/env.sh) made from `environ`."""
    environ = launch_environment(os.environ if environ is None else environ)
    env = {
        name: value
        for name, value in environ.items()
        # PYTHONPATH (the checkout first): the reward file imports reward_fns, the CPU plugin recipes
        if (name.startswith(FORWARDED_ENV_PREFIXES) or name in (*FORWARDED_ENV_NAMES, "PYTHONPATH"))
        and not is_secret(name)
    }
    env["VERL_FILE_LOGGER_PATH"] = str(metrics_path(config, environ))
    if is_cpu(config):  # verl's CPU platform and rollout, loaded in every process that imports verl
        from recipes.verl_cpu import launch_env

        env.update(launch_env(environ))
    elif env.get("VERL_PLATFORM", "").strip().lower() == "cpu":  # a CPU run's leftover in this shell
        del env["VERL_PLATFORM"]
    env["VERL_USE_EXTERNAL_MODULES"] = external_modules(config, environ)
    env.update(wandb_resume_env(config, environ))
    return env


def is_local_path(value: str) -> bool:
    """A relative path into this checkout (`outputs/...`, `reward_fns/x.py`), not a hub id (`Qwen/...`)."""
    if not value or "://" in value or value.startswith(("/", "~", "pkg:", "hdfs:")):
        return False
    first = Path(value).parts[0]
    return first in (".", "..", "outputs") or (REPO_ROOT / first).exists()


def local_path_overrides(config: DictConfig, keys: Sequence[str]) -> list[str]:
    """`key=/abs/path` for each of `keys` whose (resolved) value is a relative path into this checkout;
    the overrides come last, so they only restate the final values absolute."""
    out = []
    for key in keys:
        value = OmegaConf.select(config, key)
        values = list(value) if OmegaConf.is_list(value) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            continue
        output = key in OUTPUT_PATH_KEYS  # an output folder is never a hub id: any relative path is local
        local = [
            is_local_path(v) or (output and not Path(v).is_absolute() and "://" not in v) for v in values
        ]
        if not any(local):
            continue
        absolute = [
            str((REPO_ROOT / v).resolve()) if is_local else v
            for v, is_local in zip(values, local, strict=True)
        ]
        bad = [v for v in absolute if UNSAFE_FOR_SUBMIT & set(v)]
        if bad:
            raise LaunchError(
                f"{key} resolves to {bad[0]!r}, a path with spaces or shell characters; move it"
            )
        out.append(f"{key}=[{','.join(absolute)}]" if OmegaConf.is_list(value) else f"{key}={absolute[0]}")
    return out


def existing_cluster_overrides(config: DictConfig) -> list[str]:
    """`ray_kwargs.ray_init.num_cpus=null` (and num_gpus): a recipe may size the Ray cluster verl starts
    itself, but ray.init refuses both when it joins a running cluster (ray/_private/worker.py:1936-1939);
    there `ray start --num-cpus/--num-gpus` sized it."""
    init = OmegaConf.select(config, "ray_kwargs.ray_init") or {}
    return [
        f"ray_kwargs.ray_init.{key}=null" for key in ("num_cpus", "num_gpus") if init.get(key) is not None
    ]


def ray_auth_env(address: str | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """`RAY_AUTH_MODE=token` for a client of the running cluster at `address` when that cluster wants a
    token, a token is at hand and no mode is set.

    Ray 2.60 turns token auth on for `ray start --head` whenever a token exists (`~/.ray/auth_token`,
    which any earlier local `ray.init` writes), but never for a client given an explicit address
    (`ray/_private/worker.py:1972-1977`) nor for `ray start --address`: the driver, the preflight and the
    `ray job` CLI then fail with InvalidAuthToken. The reverse fails too, and silently (measured): a
    token-mode driver on a cluster without auth connects, but its actors are cancelled before they start
    ("all references to the actor were removed"), since the cluster cannot call back into the driver. So
    the cluster is asked first (`cluster_wants_token`). RAY_AUTH_MODE set (e.g. `disabled`, a conscious
    choice) wins."""
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_MODE") or not address:
        return {}
    token_file = Path(environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not (environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        return {}
    return {"RAY_AUTH_MODE": "token"} if cluster_wants_token(address, environ) else {}


def cluster_wants_token(address: str, environ: dict[str, str] | None = None, timeout: float = 60) -> bool:
    """Whether the Ray cluster at `address` refuses a client without a token: the dashboard (http URL)
    answers 401/403, or a `ray.init` without a token (in a subprocess: Ray's auth mode is fixed per
    process) fails with an authentication error."""
    environ = dict(os.environ if environ is None else environ)
    if address.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(address.rstrip("/") + "/api/version", timeout=timeout).close()
        except urllib.error.HTTPError as err:
            return err.code in (401, 403)
        except OSError:
            return False  # not up: the launcher's own connection says what is wrong
        return False
    probe = (
        "import ray; ray.init(address=__import__('sys').argv[1], log_to_driver=False, logging_level='ERROR')"
    )
    environ["RAY_AUTH_MODE"] = "disabled"
    environ.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe, address],
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode != 0 and "auth" in (out.stdout + out.stderr).lower()


def hydra_string(value: str) -> str:
    """A Hydra override value that stays a string (`false`, `1` would otherwise change type), quoted.
    Inside Hydra's quotes a backslash escapes only a quote or the backslashes before one (or before the
    closing quote): those are doubled and every quote escaped; other backslashes stay as they are."""
    quoted = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, quoted) + "'"


def env_var_overrides(env: dict[str, str]) -> list[str]:
    """`++ray_kwargs.ray_init.runtime_env.env_vars.NAME='value'` for verl's ray.init (main_ppo.py:64-72).
    `++` because verl's runtime_env node is a struct without env_vars (main_ppo.py:67-69)."""
    return [f"++{RUNTIME_ENV_VARS_KEY}.{name}={hydra_string(value)}" for name, value in sorted(env.items())]


def min_ray_cpus(config: DictConfig) -> int:
    """A lower bound of the CPUs verl's Ray actors reserve: the TaskRunner, one reward worker per
    `reward.num_workers`, one worker per GPU. Fewer and verl waits forever for resources."""
    return 1 + int(config.reward.num_workers) + int(config.trainer.n_gpus_per_node)


def check_ray_cpus(config: DictConfig) -> None:
    num_cpus = OmegaConf.select(config, "ray_kwargs.ray_init.num_cpus")
    if num_cpus is None or is_cpu(config):
        return
    need = min_ray_cpus(config)
    if int(num_cpus) < need:
        raise LaunchError(
            f"ray_kwargs.ray_init.num_cpus={num_cpus} is below the {need} CPUs verl's actors reserve "
            f"(1 TaskRunner + reward.num_workers={config.reward.num_workers} + "
            f"trainer.n_gpus_per_node={config.trainer.n_gpus_per_node}); verl would hang without an error. "
            "Leave it null (all CPUs) or raise it."
        )


def local_gpu_count() -> int:
    """GPUs visible to this process (torch's count; 0 on a CPU-only build or machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(config: DictConfig, available: int) -> None:
    """Refuse at once, pointing to the CPU path, where verl would only fail after starting Ray."""
    if is_cpu(config):
        return
    want = int(config.trainer.n_gpus_per_node)
    if available == 0:
        raise LaunchError(
            f"no GPU on this machine: this recipe runs on GPUs (trainer.device={config.trainer.device}). "
            f"For the same verl trainer on this CPU with a tiny model run `make train RECIPE={cpu_twin(config)}`; "
            "`DRY_RUN=1 make train` checks this recipe without GPUs; `make submit` sends it to a GPU Ray cluster."
        )
    if available < want:
        raise LaunchError(
            f"this node has {available} GPU(s) but the recipe asks for trainer.n_gpus_per_node={want}: "
            f"run with GPUS={available}, or submit to a cluster with `make submit`."
        )


def validate(config: DictConfig) -> None:
    """verl 0.9.1's own config validation, called as verl.trainer.main_ppo.main does (no Ray, no GPU).

    `auto_set_device` is applied to a copy, and only for GPU recipes: on a machine without an
    accelerator verl falls back to the CUDA platform and would rewrite a CPU recipe's device."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config
    from verl.utils.device import auto_set_device

    config = OmegaConf.create(OmegaConf.to_container(config))  # verl mutates what it validates
    if not is_cpu(config):
        auto_set_device(config)
    if is_sft(config):
        validate_sft(config)
        return
    validate_config(
        config=config,
        use_reference_policy=need_reference_policy(config),
        use_critic=need_critic(config),
    )
    # Also the rollout and algorithm dataclasses verl builds when its workers start (their
    # __post_init__ checks); validate_config builds the actor's.
    resolved = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    for key in ("actor_rollout_ref.rollout", "algorithm"):
        omega_conf_to_dataclass(OmegaConf.select(resolved, key))
    check_ray_cpus(config)


def validate_sft(config: DictConfig) -> None:
    """verl's SFT trainer has no validate_config: build the config dataclasses it builds first
    (`SFTTrainer._build_config`, minus the model, which would need the weights) and check the batch
    split its dataloader makes (global batch // data-parallel size, in micro batches)."""
    from verl.utils.config import omega_conf_to_dataclass

    for key in ("engine", "optim", "checkpoint", "profiler"):
        omega_conf_to_dataclass(config[key])
    gpus = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    batch, micro = int(config.data.train_batch_size), int(config.data.micro_batch_size_per_gpu)
    if batch % gpus or (batch // gpus) % micro:
        raise ValueError(
            f"data.train_batch_size={batch} must split evenly over {gpus} GPUs into micro batches of "
            f"data.micro_batch_size_per_gpu={micro}"
        )


def plan(
    recipe: str,
    overrides: Sequence[str] = (),
    nodes: int | None = None,
    gpus: int | None = None,
    python: str | None = None,
    route: str = "train",
    environ: dict[str, str] | None = None,
) -> LaunchPlan:
    """Compose the recipe with NODES/GPUS (GPU recipes) and the user's overrides, which win; then the
    same for every recipe and route: local paths absolute, `worker_env` for the driver and the workers.

    route "train" (this node or a cluster at RAY_ADDRESS): code and data paths absolute, worker_env as
    verl runtime_env overrides. route "submit": the job runs in an uploaded copy of the checkout, where
    the code paths resolve; data and outputs are made absolute (outputs/ is not uploaded), worker_env
    travels in the job's runtime_env (`submit_spec`), since Ray refuses a ray.init runtime_env that
    repeats the job's variables (ray/_private/worker.py:1797-1806)."""
    if route not in ("train", "submit"):
        raise LaunchError(f"unknown route {route!r}: train or submit")
    base = compose(recipe, overrides)
    user = [*cluster_overrides(base, nodes, gpus), *overrides]
    config = compose(recipe, user) if user != list(overrides) else base
    keys = DATA_PATH_KEYS if route == "submit" else (*CODE_PATH_KEYS, *DATA_PATH_KEYS)
    env = worker_env(config, environ)
    if route == "submit":
        env.pop("PYTHONPATH")  # the job's working_dir is on its workers' sys.path
    extra = local_path_overrides(config, keys) + (env_var_overrides(env) if route == "train" else [])
    environ_ = os.environ if environ is None else environ
    if route == "submit" or environ_.get("RAY_ADDRESS"):
        extra += existing_cluster_overrides(config)
    all_overrides = [*user, *extra]
    if extra:
        config = compose(recipe, all_overrides)
    command = training_command(recipe, all_overrides, config, python or default_python())
    return LaunchPlan(recipe=recipe, overrides=all_overrides, config=config, command=command, env=env)


def start_run_files(launch: LaunchPlan) -> None:
    """Before the trainer starts: the image bound and the W&B run id in the checkpoint folder
    (recipes/image_bound.py, `wandb_resume_env`), and, when verl starts from scratch, an earlier run's metrics.jsonl
    moved aside (metrics.before-<UTC time>.jsonl), since the file logger appends
    (recipes/metrics_log.py) and a new run's curves must not continue an old one's."""
    from inference.fileio import atomic_path

    metrics = Path(launch.env["VERL_FILE_LOGGER_PATH"])
    if not resumes(launch.config) and metrics.is_file() and metrics.stat().st_size:
        import time

        kept = metrics.with_name(
            f"{metrics.stem}.before-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.jsonl"
        )
        metrics.rename(kept)
        print(
            f"note: a new run (no checkpoint to resume): the earlier metrics moved to {kept}", file=sys.stderr
        )
    from recipes import image_bound

    image_bound.record(launch.config, REPO_ROOT)  # for `make export` (verl saves the processor without it)
    run_id = launch.env.get("WANDB_RUN_ID")
    id_file = checkpoint_dir(launch.config) / WANDB_ID_FILE
    if run_id and (not id_file.is_file() or id_file.read_text().strip() != run_id):
        id_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(id_file) as tmp:
            tmp.write_text(run_id + "\n", encoding="utf-8")


def make_train_command(recipe: str, overrides: Sequence[str] = ()) -> list[str]:
    """`make train RECIPE=<recipe> ARGS=<overrides>` as one process of this interpreter (the demo and
    the bench run it)."""
    return [sys.executable, "-m", "recipes.launch", "--recipe", recipe, "train", "--", *overrides]


def default_python() -> str:
    """The interpreter running this launcher: the Makefile picks the environment once (PYTHON=, an
    activated environment, or .venv), and the trainer runs in that same one."""
    return sys.executable


def runtime_env(extra_env: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> dict:
    """recipes/runtime_env.yaml with working_dir = the checkout and this shell's WANDB_*/HF_* variables."""
    environ = dict(os.environ if environ is None else environ)
    spec = yaml.safe_load(RUNTIME_ENV_FILE.read_text())
    spec["working_dir"] = str(REPO_ROOT)
    env_vars = {str(k): str(v) for k, v in (spec.get("env_vars") or {}).items()}
    for name, value in environ.items():
        if name.startswith(FORWARDED_ENV_PREFIXES) or name in FORWARDED_ENV_NAMES:
            env_vars[name] = value
    env_vars.update(extra_env or {})
    spec["env_vars"] = env_vars
    return spec


def redacted(spec: dict) -> dict:
    """A runtime_env fit to print: values of secret-looking variables replaced by ***."""
    env_vars = {
        k: ("***" if k.upper().rsplit("_", 1)[-1] in SECRET_SUFFIXES else v)
        for k, v in spec["env_vars"].items()
    }
    return {**spec, "env_vars": env_vars}


def write_runtime_env(spec: dict, path: Path) -> Path:
    """Atomically, readable by the owner only (it may carry WANDB_API_KEY / HF_TOKEN)."""
    from inference.fileio import atomic_path

    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)  # before a secret is in it
        tmp.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def submit_spec(launch: LaunchPlan, environ: dict[str, str] | None = None) -> dict:
    """The runtime_env of a submitted job: recipes/runtime_env.yaml, this shell's forwarded variables
    (secrets included: the file is owner-only) and `worker_env` (absolute metrics path). Ray gives a
    job's runtime_env to every worker of the job (verl merges its own over it, worker.py:1797)."""
    return runtime_env(launch.env, environ)


#: `ray job submit` joins the entry point with subprocess.list2cmdline (Windows quoting) and the job
#: runs it with /bin/sh: arguments holding these characters would not arrive intact.
UNSAFE_FOR_SUBMIT = set(" \t\n'\"\\$`;&|<>(){}*?!#~")


def check_submittable(overrides: Sequence[str]) -> None:
    bad = [o for o in overrides if UNSAFE_FOR_SUBMIT & set(o.lstrip("+~"))]
    if bad:
        raise LaunchError(
            f"override(s) {bad} hold quotes, spaces or shell characters that `ray job submit` cannot pass "
            "through intact; put such values in a recipe or group file under recipes/config/ instead."
        )


def submit_command(
    launch: LaunchPlan, address: str, ray: str, runtime_env_file: Path, no_wait: bool = False
) -> list[str]:
    """`ray job submit` of the plan's command with the runtime_env written to `runtime_env_file`."""
    cmd = [ray, "job", "submit", "--address", address, "--runtime-env", str(runtime_env_file)]
    if no_wait:
        cmd.append("--no-wait")
    return [*cmd, "--", *launch.command]


def ray_cli() -> str:
    local = Path(sys.executable).parent / "ray"
    return str(local) if local.exists() else (shutil.which("ray") or "ray")


def describe(launch: LaunchPlan, command: Sequence[str], env: dict[str, str], extra: str = "") -> str:
    """The dry-run report: the fully composed config, then the exact command."""
    lines = [
        f"# recipe: {launch.recipe}  (device: {launch.config.trainer.device})",
        OmegaConf.to_yaml(launch.config).rstrip(),
    ]
    if extra:
        lines.append(extra.rstrip())
    if env:
        lines.append("# environment: " + " ".join(f"{k}={v}" for k, v in env.items()))
    lines += ["# command:", shlex.join(command)]
    return "\n".join(lines)


def int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.launch",
        description="Check a recipe and run it on this node (train) or on a Ray cluster (submit). "
        "Defaults come from RECIPE, NODES, GPUS, DRY_RUN, RAY_ADDRESS.",
    )
    parser.add_argument("action", choices=["train", "submit"])
    parser.add_argument("--recipe", default=os.environ.get("RECIPE") or DEFAULTS["DEFAULT_RECIPE"])
    parser.add_argument("--nodes", type=int_or_none, default=int_or_none(os.environ.get("NODES")))
    parser.add_argument("--gpus", type=int_or_none, default=int_or_none(os.environ.get("GPUS")))
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=os.environ.get("DRY_RUN", "") not in ("", "0"),
        help="print the composed config and the command, run verl's validation, start nothing",
    )
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or DEFAULT_RAY_ADDRESS)
    parser.add_argument("--no-wait", action="store_true", help="submit: return once the job is accepted")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=qwen3_vl_8b reward=no_goal")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from recipes import doctor

    args = parse_args(argv)
    os.environ.update(launch_environment())  # a no-op under make and the launchers
    if args.action == "submit" or os.environ.get("RAY_ADDRESS"):  # a client of a running cluster
        os.environ.update(
            ray_auth_env(args.address if args.action == "submit" else os.environ["RAY_ADDRESS"])
        )
    try:
        if args.action == "train":
            launch = plan(args.recipe, args.overrides, args.nodes, args.gpus, python=default_python())
            command, env, shown = launch.command, launch.env, ""
        else:
            # The job runs the cluster's python in the uploaded checkout.
            python = os.environ.get("SUBMIT_PYTHON", "python")
            launch = plan(args.recipe, args.overrides, args.nodes, args.gpus, python=python, route="submit")
            check_submittable(launch.overrides)
            spec = submit_spec(launch)
            env_file = REPO_ROOT / "outputs" / "submit" / f"runtime_env_{launch.recipe}.yaml"
            command, env = submit_command(launch, args.address, ray_cli(), env_file, args.no_wait), {}
            shown = "# runtime_env:\n" + yaml.safe_dump(redacted(spec), sort_keys=False)
        if args.dry_run:
            print(describe(launch, command, env, shown), flush=True)
            validate(launch.config)
            check = (
                "verl SFT config dataclasses and batch split"
                if is_sft(launch.config)
                else "verl validate_config"
            )
            print(f"# {check}: passed", flush=True)
        if not args.dry_run:  # the tiny recipes' synthetic set and model (recipes/config/assets/)
            from recipes import tiny_assets

            tiny_assets.ensure(launch.config)
        # The preflight, on every route; under DRY_RUN what depends on this machine only warns.
        address = args.address if args.action == "submit" else os.environ.get("RAY_ADDRESS")
        findings = doctor.run_checks(launch, route=args.action, address=address, dry_run=args.dry_run)
        print(doctor.report(findings), file=sys.stdout if args.dry_run else sys.stderr, flush=True)
        if doctor.failed(findings):
            return 2
        if args.dry_run:
            return 0
        if args.action == "submit":
            write_runtime_env(spec, env_file)
        check_ray_cpus(launch.config)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except HydraException as err:
        print(
            f"error: recipe {args.recipe!r} with overrides {args.overrides} does not compose: {err}",
            file=sys.stderr,
        )
        return 2
    except (AssertionError, ValueError) as err:  # verl's validate_config reports with both
        print(f"error: verl's config checks rejected recipe {args.recipe!r}: {err}", file=sys.stderr)
        return 2
    # verl's FileLogger opens VERL_FILE_LOGGER_PATH without creating its folder
    # (verl/utils/tracking.py:534-541): create it here (the doctor did on every node of a cluster).
    Path(launch.env["VERL_FILE_LOGGER_PATH"]).parent.mkdir(parents=True, exist_ok=True)
    start_run_files(launch)
    print("+ " + shlex.join(command), file=sys.stderr, flush=True)
    os.chdir(REPO_ROOT)
    os.execvpe(command[0], command, {**os.environ, **env})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
