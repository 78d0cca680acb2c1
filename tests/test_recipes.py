"""The recipes compose on verl 0.9.1's own config, pass its validation on CPU, carry the paper's
hyperparameters, and the launchers behave (DRY_RUN, no-GPU stop, CPU dispatch, Ray submission spec)."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from recipes import launch

REPO = Path(__file__).resolve().parents[1]
PAPER = "imageedit_r1_qwen2_5_vl_7b"
TINY = "imageedit_r1_tiny"
MODELS = {
    "qwen2_5_vl_7b": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen3_vl_8b": "Qwen/Qwen3-VL-8B-Instruct",
    "qwen2_5_vl_3b": "Qwen/Qwen2.5-VL-3B-Instruct",
}


def script_env(**extra: str) -> dict[str, str]:
    """The environment the Makefile gives the scripts (minus PYTHONPATH: the scripts set it)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DRY_RUN", "RECIPE", "NODES", "GPUS")
    }
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_script(script: str, *args: str, timeout: int = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "recipes" / script), *args],
        cwd="/",  # the scripts must not depend on the caller's directory
        env=script_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- composition and the paper's numbers ---------------------------------------------------------


def test_paper_recipe_has_the_papers_hyperparameters():
    cfg = launch.compose(PAPER)
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.algorithm.adv_estimator == "grpo"
    assert actor.ppo_mini_batch_size == 32  # EasyR1 worker.actor.global_batch_size
    assert rollout.n == 8
    assert rollout.temperature == 1.0
    assert actor.optim.lr == pytest.approx(1e-6)
    assert rollout.name == "vllm"
    assert (cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, cfg.trainer.device) == (1, 8, "cuda")
    assert cfg.actor_rollout_ref.model.path == MODELS["qwen2_5_vl_7b"]
    # KL to the reference in the loss, after verl's Qwen2.5-VL-7B GRPO example; eq. 4's token mean.
    assert (actor.use_kl_loss, actor.kl_loss_type, actor.kl_loss_coef) == (True, "low_var_kl", 0.01)
    assert actor.loss_agg_mode == "token-mean"
    assert cfg.algorithm.use_kl_in_reward is False
    # The rollout batch holds a whole number of global batches.
    assert cfg.data.train_batch_size % actor.ppo_mini_batch_size == 0


def test_reward_is_wired_through_the_key_verl_reads():
    cfg = launch.compose(PAPER)
    reward_fn = cfg.reward.custom_reward_function
    assert reward_fn.path == "reward_fns/imageedit_r1.py"
    assert reward_fn.name == "compute_score"
    assert reward_fn.reward_kwargs.mode == "exact"
    assert dict(reward_fn.reward_kwargs.weights) == {
        "format": 1.0,
        "action": 1.0,
        "subject": 1.0,
        "goal": 1.0,
    }
    # The legacy top-level key is silently ignored by verl 0.9.1: the recipe must leave it empty.
    assert OmegaConf.select(cfg, "custom_reward_function.path") is None
    assert (REPO / reward_fn.path).is_file()


def test_reward_function_loads_through_verls_own_loader():
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = launch.compose(PAPER)
    os.chdir(REPO)  # verl resolves the path against the working directory, as the launchers set it
    score = get_custom_reward_fn(cfg)
    gt = '{"actions": ["recolor"], "subjects": ["cube"], "goals": ["red"]}'
    out = score(
        data_source="synthetic",
        solution_str='<think>t</think><action>["recolor"]</action><subjects>["cube"]</subjects><goals>["red"]</goals>',
        ground_truth=gt,
    )
    assert out["score"] == pytest.approx(1.0)


def test_reward_component_curves_use_the_reward_engineers_replay_buffer():
    cfg = launch.compose(PAPER)
    sampler = cfg.trainer.v1.sampler.custom_sampler
    assert (REPO / sampler.path).is_file()
    assert sampler.name == "RewardComponentReplayBuffer"
    assert cfg.trainer.v1.trainer_mode == "sync"  # the buffer above is the sync one
    assert "file" in cfg.trainer.logger and "wandb" in cfg.trainer.logger
    # verl's own buffer (for DAPO's group filtering) with one override
    assert (
        launch.compose(
            PAPER, ["trainer.v1.sampler.custom_sampler.path=null"]
        ).trainer.v1.sampler.custom_sampler.path
        is None
    )


def test_replay_buffer_loads_through_verls_loader_as_a_verl_replay_buffer():
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
    from verl.utils.import_utils import load_extern_object

    sampler = launch.compose(PAPER).trainer.v1.sampler.custom_sampler
    os.chdir(REPO)
    assert issubclass(load_extern_object(sampler.path, sampler.name), ReplayBuffer)


def test_groups_swap_on_the_command_line():
    cfg = launch.compose(PAPER, ["model=qwen3_vl_8b", "reward=no_goal", "trainer.logger=[console,file]"])
    assert cfg.actor_rollout_ref.model.path == MODELS["qwen3_vl_8b"]
    weights = cfg.reward.custom_reward_function.reward_kwargs.weights
    assert (weights.goal, weights.format, weights.action, weights.subject) == (0.0, 1.0, 1.0, 1.0)
    synthetic = launch.compose(PAPER, ["data=synthetic"])  # the synthetic set with any model
    assert synthetic.data.train_files == "outputs/data/synthetic/train.parquet"
    assert synthetic.actor_rollout_ref.model.path == MODELS["qwen2_5_vl_7b"]
    assert "wandb" not in cfg.trainer.logger
    assert launch.compose(PAPER, ["reward=fuzzy"]).reward.custom_reward_function.reward_kwargs.mode == "fuzzy"
    semantic = launch.compose(PAPER, ["reward=semantic"]).reward.custom_reward_function.reward_kwargs
    assert semantic.mode == "semantic"
    # verl's own reward defaults survive under our reward group
    assert cfg.reward.reward_manager.name == "naive"


def test_config_groups_are_the_ablation_axes():
    """Groups only where a recipe swaps an option (recipes/README.md): everything else of a recipe is in
    its own file and the body it shares with the other recipes of its trainer (base/)."""
    folders = {
        p.name for p in (REPO / "recipes" / "config").iterdir() if p.is_dir() and p.name != "__pycache__"
    }
    assert folders == {"model", "cluster", "data", "reward", "assets", "base"}
    for axis in ("model", "cluster", "data", "reward"):
        assert len(list((REPO / "recipes" / "config" / axis).glob("*.yaml"))) >= 2, axis


def test_tiny_recipe_is_the_paper_recipe_with_three_axes_swapped():
    """Every key the tiny recipe shares with the paper's comes from the same file (base/grpo.yaml)."""
    paper, tiny = launch.compose(PAPER), launch.compose(TINY)
    for key in (
        "algorithm.adv_estimator",
        "actor_rollout_ref.actor.kl_loss_type",
        "actor_rollout_ref.actor.kl_loss_coef",
        "actor_rollout_ref.rollout.n",
        "actor_rollout_ref.rollout.temperature",
        "trainer.project_name",
        "trainer.logger",
        "trainer.v1.sampler.custom_sampler.name",
        "reward.custom_reward_function.reward_kwargs",
    ):
        assert OmegaConf.select(tiny, key) == OmegaConf.select(paper, key), key
    assert (paper.actor_rollout_ref.rollout.name, tiny.actor_rollout_ref.rollout.name) == ("vllm", "hf")


def test_tiny_recipe_carries_the_contract_keys():
    cfg = launch.compose(TINY)
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.trainer.device == "cpu"
    assert (rollout.n, rollout.temperature, rollout.top_p) == (8, 1.0, 1.0)
    assert actor.optim.lr == pytest.approx(2e-4)
    assert (actor.use_kl_loss, actor.kl_loss_type, actor.kl_loss_coef) == (True, "low_var_kl", 0.01)
    assert (actor.clip_ratio, actor.loss_agg_mode) == (0.2, "token-mean")
    assert (cfg.data.train_batch_size, cfg.data.max_response_length) == (8, 48)
    assert cfg.trainer.total_training_steps == 150
    assert cfg.reward.custom_reward_function.path == "reward_fns/imageedit_r1.py"
    assert cfg.reward.custom_reward_function.name == "compute_score"
    assert "reward_kwargs" in cfg.reward.custom_reward_function
    # one knob each: moving the data or the model moves what verl's dataset and model keys read
    moved = launch.compose(TINY, ["assets.data.dir=/d", "assets.model.dir=/m"])
    assert (moved.data.train_files, moved.data.val_files) == ("/d/train.parquet", "/d/val.parquet")
    assert moved.actor_rollout_ref.model.path == "/m"


@pytest.mark.parametrize("nodes", [1, 2])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_gpu_model_passes_verls_validation(model, nodes):
    """verl's validate_config, as main_ppo calls it, for each model group on 1 and 2 nodes of 8 GPUs."""
    p = launch.plan(PAPER, [f"model={model}"], nodes=nodes, gpus=8)
    assert (p.config.trainer.nnodes, p.config.trainer.n_gpus_per_node) == (nodes, 8)
    assert p.config.actor_rollout_ref.model.path == MODELS[model]
    launch.validate(p.config)


def test_validation_rejects_an_impossible_batch():
    p = launch.plan(PAPER, ["data.train_batch_size=3"], nodes=1, gpus=8)  # 3 x 8 rollouts = 24 < 32 x 8
    with pytest.raises((AssertionError, ValueError)):
        launch.validate(p.config)


def test_validation_keeps_a_cpu_recipe_on_cpu():
    cfg = launch.compose(TINY)
    launch.validate(cfg)
    assert cfg.trainer.device == "cpu"  # verl's auto_set_device would rewrite it on a GPU-less machine


# --- launch plans ---------------------------------------------------------------------------------


def test_gpu_plan_is_verls_own_main_with_nodes_and_gpus_first():
    p = launch.plan(PAPER, ["trainer.total_epochs=1", "trainer.nnodes=4"], nodes=2, gpus=4, python="py")
    assert p.command[:11] == [
        "py",
        "-m",
        "verl.trainer.main_ppo",
        "--config-path",
        "pkg://recipes.config",
        "--config-name",
        PAPER,
        "trainer.nnodes=2",
        "trainer.n_gpus_per_node=4",
        "trainer.total_epochs=1",
        "trainer.nnodes=4",
    ]
    assert p.config.trainer.nnodes == 4  # the user's overrides win over NODES
    assert p.env["VERL_FILE_LOGGER_PATH"] == f"{REPO}/outputs/runs/qwen2_5_vl_7b_grpo/metrics.jsonl"


def test_cpu_recipe_runs_verls_own_trainer_through_the_same_plan():
    from recipes.verl_cpu import launch_env

    p = launch.plan(TINY, ["trainer.total_training_steps=5"], nodes=1, gpus=8, python="py")
    assert p.command[:7] == [
        "py",
        "-m",
        "verl.trainer.main_ppo",
        "--config-path",
        "pkg://recipes.config",
        "--config-name",
        TINY,
    ]
    assert p.command[7] == "trainer.total_training_steps=5"  # NODES/GPUS do not apply on CPU
    plugin = launch_env()
    modules = plugin.pop("VERL_USE_EXTERNAL_MODULES")
    assert p.on_cpu and plugin.items() <= p.env.items()  # the CPU plugin's variables, in worker_env
    assert p.env["VERL_USE_EXTERNAL_MODULES"].split(",") == [
        launch.METRICS_LOG_MODULE,
        launch.VALIDATION_SAMPLES_MODULE,
        modules,
    ]
    assert p.env["VERL_FILE_LOGGER_PATH"] == f"{REPO}/outputs/runs/tiny_grpo/metrics.jsonl"


def test_a_cpu_runs_leftover_variables_never_reach_a_gpu_recipes_workers():
    """A shell that ran the CPU recipe by hand keeps VERL_PLATFORM=cpu and the plugin module: a GPU
    recipe's workers get our two trainer modules and the user's own modules only."""
    from recipes.verl_cpu import PLUGIN_MODULE

    shell = {
        **os.environ,
        "VERL_PLATFORM": "cpu",
        "VERL_USE_EXTERNAL_MODULES": f"{PLUGIN_MODULE},my_pkg.plugin",
    }
    env = launch.worker_env(launch.compose(PAPER), shell)
    assert "VERL_PLATFORM" not in env
    assert env["VERL_USE_EXTERNAL_MODULES"] == (
        f"{launch.METRICS_LOG_MODULE},{launch.VALIDATION_SAMPLES_MODULE},my_pkg.plugin"
    )
    assert env["WANDB_RESUME"] == "allow" and env["WANDB_RUN_ID"]


def test_no_gpu_is_refused_with_a_pointer_to_the_cpu_path():
    with pytest.raises(launch.LaunchError, match="no GPU.*imageedit_r1_tiny"):
        launch.check_gpus(launch.compose(PAPER), available=0)
    with pytest.raises(launch.LaunchError, match="4 GPU"):
        launch.check_gpus(launch.compose(PAPER), available=4)
    launch.check_gpus(launch.compose(PAPER), available=8)
    launch.check_gpus(launch.compose(TINY), available=0)


def test_low_ray_num_cpus_is_refused_before_verl_hangs():
    cfg = launch.compose(PAPER, ["ray_kwargs.ray_init.num_cpus=2"])
    with pytest.raises(launch.LaunchError, match="num_cpus=2.*hang"):
        launch.check_ray_cpus(cfg)
    launch.check_ray_cpus(launch.compose(PAPER, ["ray_kwargs.ray_init.num_cpus=64"]))
    launch.check_ray_cpus(launch.compose(PAPER))  # null: all CPUs


def test_unknown_recipe_names_the_choices():
    with pytest.raises(launch.LaunchError, match="unknown recipe 'nope'.*imageedit_r1_tiny"):
        launch.compose("nope")


# --- Ray submission spec --------------------------------------------------------------------------


def test_submit_runtime_env_uploads_the_checkout_without_heavy_folders(tmp_path):
    p = launch.plan(TINY, [], python="python")
    env = {
        "WANDB_MODE": "offline",
        "WANDB_API_KEY": "k-123",
        "HF_TOKEN": "t",
        "HOME": "/h",
        "TOKENIZERS_PARALLELISM": "false",
    }
    spec = launch.runtime_env(environ=env)
    assert spec["working_dir"] == str(REPO)
    for folder in (".venv/", "outputs/", "wandb/", ".git/"):
        assert folder in spec["excludes"]
    assert spec["env_vars"]["WANDB_MODE"] == "offline" and spec["env_vars"]["WANDB_API_KEY"] == "k-123"
    assert spec["env_vars"]["HF_TOKEN"] == "t" and "HOME" not in spec["env_vars"]
    shown = launch.redacted(spec)["env_vars"]
    assert shown["WANDB_API_KEY"] == "***" and shown["HF_TOKEN"] == "***"
    assert shown["TOKENIZERS_PARALLELISM"] == "false" and shown["WANDB_MODE"] == "offline"
    written = launch.write_runtime_env(spec, tmp_path / "env.yaml")
    assert yaml.safe_load(written.read_text()) == spec
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    cmd = launch.submit_command(p, "http://127.0.0.1:8265", "ray", written)
    assert cmd[:7] == [
        "ray",
        "job",
        "submit",
        "--address",
        "http://127.0.0.1:8265",
        "--runtime-env",
        str(written),
    ]
    assert cmd[7:9] == ["--", "python"] and cmd[9:] == p.command[1:]


def test_submit_metrics_path_is_absolute():
    """Issue 12, defect 3: a relative path lands in the job's uploaded copy, which has no outputs/
    (runtime_env.yaml excludes it): verl's FileLogger then fails after every model has loaded."""
    p = launch.plan(PAPER, [], nodes=1, gpus=8, route="submit", environ={"WANDB_MODE": "offline"})
    spec = launch.submit_spec(p, environ={"WANDB_MODE": "offline"})
    assert (
        spec["env_vars"]["VERL_FILE_LOGGER_PATH"] == f"{REPO}/outputs/runs/qwen2_5_vl_7b_grpo/metrics.jsonl"
    )
    assert "PYTHONPATH" not in spec["env_vars"]  # the job's working_dir is on its sys.path
    # outputs are absolute too (checkpoints); code paths resolve in the uploaded working_dir
    assert (
        f"trainer.default_local_dir={REPO}/outputs/checkpoints/imageedit_r1/qwen2_5_vl_7b_grpo" in p.overrides
    )
    assert p.config.reward.custom_reward_function.path == "reward_fns/imageedit_r1.py"
    # no ray_init env overrides on this route: Ray refuses a ray.init runtime_env repeating the job's
    assert not [o for o in p.overrides if launch.RUNTIME_ENV_VARS_KEY in o]


def test_worker_env_reaches_verls_ray_init_runtime_env():
    """Issue 12, defect 5: the variables workers need ride in ray_kwargs.ray_init.runtime_env.env_vars,
    which verl merges over its defaults for ray.init (main_ppo.py:64-72); secrets stay out (verl prints
    the ray.init arguments)."""
    environ = {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "WANDB_API_KEY": "k", "HOME": "/h"}
    p = launch.plan(PAPER, [], nodes=1, gpus=8, environ=environ)
    env_vars = OmegaConf.to_container(p.config.ray_kwargs.ray_init.runtime_env.env_vars, resolve=True)
    assert env_vars == p.env == launch.worker_env(p.config, environ)
    assert (
        env_vars["WANDB_MODE"] == "offline" and env_vars["HF_HUB_OFFLINE"] == "1"
    )  # strings, not bools/ints
    assert env_vars["VERL_FILE_LOGGER_PATH"] == f"{REPO}/outputs/runs/qwen2_5_vl_7b_grpo/metrics.jsonl"
    assert env_vars["PYTHONPATH"] == str(REPO)
    assert "WANDB_API_KEY" not in env_vars and "HOME" not in env_vars
    from recipes import doctor

    verl_env = doctor.verl_runtime_env(p.config)  # what verl's run_ppo passes to ray.init
    assert verl_env["env_vars"]["VERL_FILE_LOGGER_PATH"] == env_vars["VERL_FILE_LOGGER_PATH"]
    # a value Hydra would read as another type stays a string
    p = launch.plan(PAPER, [], nodes=1, gpus=8, environ={"WANDB_SILENT": "true", "HF_X": "it's"})
    assert p.config.ray_kwargs.ray_init.runtime_env.env_vars.WANDB_SILENT == "true"
    assert p.config.ray_kwargs.ray_init.runtime_env.env_vars.HF_X == "it's"


def test_train_paths_are_absolute_for_workers_in_any_folder():
    """Issue 12, defect 4: verl resolves the reward file, replay buffer and data against each worker's
    current folder and forces working_dir None (constants_ppo.py:114-121)."""
    p = launch.plan(PAPER, ["model=qwen3_vl_8b"], nodes=1, gpus=8)
    c = p.config
    assert c.reward.custom_reward_function.path == f"{REPO}/reward_fns/imageedit_r1.py"
    assert c.trainer.v1.sampler.custom_sampler.path == f"{REPO}/reward_fns/replay_buffer.py"
    assert c.data.train_files == f"{REPO}/outputs/data/imageedit_r1/train.parquet"
    assert c.trainer.default_local_dir == f"{REPO}/outputs/checkpoints/imageedit_r1/qwen2_5_vl_7b_grpo"
    assert c.actor_rollout_ref.model.path == "Qwen/Qwen3-VL-8B-Instruct"  # a hub id stays one
    given = launch.plan(PAPER, ["data.train_files=[/d/a.parquet,outputs/b.parquet]"], nodes=1, gpus=8)
    assert list(given.config.data.train_files) == ["/d/a.parquet", f"{REPO}/outputs/b.parquet"]


def test_submit_refuses_overrides_the_shell_would_mangle():
    launch.check_submittable(["trainer.logger=[console,file]", "+a.b=1", "~c", "x.y=1e-6"])
    with pytest.raises(launch.LaunchError, match="shell"):
        launch.check_submittable(["trainer.experiment_name='a b'"])


# --- the scripts themselves -----------------------------------------------------------------------


@pytest.mark.parametrize("nodes", ["1", "2"])
def test_dry_run_of_the_paper_recipe_composes_and_validates(nodes):
    """`DRY_RUN=1 make train NODES=.. GPUS=8 ARGS=..` (make never reinstalls .venv here)."""
    out = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",
            "train",
            f"NODES={nodes}",
            "GPUS=8",
            "ARGS=trainer.total_epochs=1",
        ],
        cwd=REPO,
        env=script_env(DRY_RUN="1"),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "# verl validate_config: passed" in text
    assert "# doctor: passed" in text  # the preflight runs under DRY_RUN too
    command = shlex.split(text.split("# command:\n", 1)[1].strip().splitlines()[0])
    assert command[1:9] == [
        "-m",
        "verl.trainer.main_ppo",
        "--config-path",
        "pkg://recipes.config",
        "--config-name",
        PAPER,
        f"trainer.nnodes={nodes}",
        "trainer.n_gpus_per_node=8",
    ]
    assert command[9] == "trainer.total_epochs=1"
    assert f"reward.custom_reward_function.path={REPO}/reward_fns/imageedit_r1.py" in command
    composed = yaml.safe_load(text.split("# command:")[0].split("\n", 1)[1].split("# environment:")[0])
    assert composed["trainer"]["nnodes"] == int(nodes)
    assert composed["actor_rollout_ref"]["actor"]["ppo_mini_batch_size"] == 32
    assert composed["reward"]["custom_reward_function"]["path"] == f"{REPO}/reward_fns/imageedit_r1.py"


def test_train_without_gpu_stops_at_once_and_points_to_the_cpu_path():
    if launch.local_gpu_count():
        pytest.skip("this machine has a GPU")
    out = run_script("train.sh", timeout=120, NODES="1", GPUS="8")
    assert out.returncode == 2
    assert "no GPU" in out.stderr and "RECIPE=imageedit_r1_tiny" in out.stderr
    assert "Traceback" not in out.stderr


def test_dry_run_of_the_cpu_recipe_prints_the_cpu_command():
    out = run_script(
        "train.sh", "trainer.total_training_steps=5", DRY_RUN="1", RECIPE=TINY, NODES="1", GPUS="8"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    command = out.stdout.split("# command:\n", 1)[1].splitlines()[0]
    assert f"-m verl.trainer.main_ppo --config-path pkg://recipes.config --config-name {TINY} " in command
    assert "trainer.total_training_steps=5" in command and "# doctor: passed" in out.stdout


def test_bad_input_gets_a_clear_error():
    out = run_script("train.sh", "no_such_key=1", DRY_RUN="1", RECIPE=PAPER)
    assert out.returncode == 2 and "does not compose" in out.stderr and "no_such_key" in out.stderr
    out = run_script("submit.sh", RECIPE="nope")
    assert out.returncode == 2 and "unknown recipe 'nope'" in out.stderr


@pytest.mark.parametrize("script", ["train.sh", "submit.sh", "export.sh", "slurm/train.slurm"])
def test_scripts_answer_help(script):
    out = run_script(script, "--help", timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_launcher_module_runs_without_the_scripts():
    out = subprocess.run(
        [sys.executable, "-m", "recipes.launch", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "train" in out.stdout and "submit" in out.stdout


# --- the GPU SFT cold-start recipe ----------------------------------------------------------------


def test_sft_recipe_runs_verls_sft_trainer_under_torchrun():
    p = launch.plan("sft_qwen2_5_vl_7b", ["trainer.total_epochs=2"], nodes=1, gpus=4, python="py")
    assert launch.is_sft(p.config) and not launch.is_sft(launch.compose(PAPER))
    assert p.command[:6] == [
        "py",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=4",
    ]
    assert p.command[6:12] == [
        "-m",
        "verl.trainer.sft_trainer",
        "--config-path",
        "pkg://recipes.config",
        "--config-name",
        "sft_qwen2_5_vl_7b",
    ]
    assert "trainer.total_epochs=2" in p.command
    data = p.config.data
    assert (data.messages_key, data.image_key) == ("messages", "images")
    assert data.train_files == f"{REPO}/outputs/data/imageedit_r1/sft_train.parquet"
    assert p.config.model.path == MODELS["qwen2_5_vl_7b"]
    launch.validate(p.config)


def test_sft_recipe_refuses_what_it_cannot_run():
    with pytest.raises(launch.LaunchError, match="one node"):
        launch.plan("sft_qwen2_5_vl_7b", nodes=2, gpus=8)
    with pytest.raises(ValueError, match="split evenly over 3 GPUs"):
        launch.validate(launch.plan("sft_qwen2_5_vl_7b", nodes=1, gpus=3).config)


def test_the_default_recipe_is_named_once():
    """recipes/defaults.env names it; the Makefile, the launchers, the Slurm script and the Python
    entry points read it from there (a literal elsewhere would drift)."""
    name = launch.DEFAULTS["DEFAULT_RECIPE"]
    assert (REPO / "recipes" / "config" / f"{name}.yaml").is_file()
    places = [
        REPO / "Makefile",
        *REPO.glob("recipes/*.py"),
        *REPO.glob("recipes/*.sh"),
        REPO / "recipes/slurm/train.slurm",
    ]
    assert [str(p.relative_to(REPO)) for p in places if name in p.read_text()] == []


# --- the launch environment, defined once (recipes/env.sh) ---------------------------------------------

LAUNCH_VARIABLES = (
    "PYTHONPATH",
    "WANDB_MODE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
)


def _env_sh(environ: dict[str, str]) -> dict[str, str]:
    return launch.launch_environment({"PATH": os.environ["PATH"], **environ})


def test_env_sh_makes_the_launch_environment_and_your_values_win():
    env = _env_sh({})
    assert env["PYTHONPATH"] == str(REPO)
    assert (env["WANDB_MODE"], env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]) == ("offline", "1", "1")
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert _env_sh({"WANDB_API_KEY": "k"})["WANDB_MODE"] == "online"
    mine = _env_sh({"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "0", "PYTHONPATH": "/x"})
    assert (mine["WANDB_MODE"], mine["HF_HUB_OFFLINE"], mine["TRANSFORMERS_OFFLINE"]) == (
        "disabled",
        "0",
        "0",
    )
    assert mine["PYTHONPATH"] == f"{REPO}:/x"
    assert _env_sh(env) == env  # applying it twice changes nothing


def test_env_sh_runs_a_command_in_that_environment():
    out = subprocess.run(
        ["bash", "recipes/env.sh", "bash", "-c", 'echo "$WANDB_MODE $PYTHONPATH"'],
        cwd=REPO, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.split() == ["offline", str(REPO)]


def test_no_launcher_sets_the_launch_environment_itself():
    """The Makefile, the shell launchers, Slurm and the Python launchers take these variables from
    recipes/env.sh: an assignment of one of them anywhere else would drift from it."""
    places = [REPO / "Makefile", *REPO.glob("recipes/*.sh"), REPO / "recipes/slurm/train.slurm", *REPO.glob("recipes/*.py"),
              *REPO.glob("recipes/verl_cpu/*.py")]  # fmt: skip
    assigned = re.compile(
        rf"(?:export\s+|\[\"|env\.setdefault\(\"|^\s*)({'|'.join(LAUNCH_VARIABLES)})\b\s*[\]\"]*\s*[:?]?=",
        re.M,
    )
    found = [
        f"{p.relative_to(REPO)}: {m.group(0).strip()}"
        for p in places
        if p.name != "env.sh"
        for m in assigned.finditer(p.read_text())
    ]
    assert found == []
    for target in ("test", "demo", "bench", "doctor", "app", "tiny"):
        text = subprocess.run(
            ["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=30
        ).stdout
        assert "bash recipes/env.sh" in text, target


def test_sft_and_grpo_recipes_share_one_project_logging_and_checkpoint_tree():
    """base/sft.yaml restates the GRPO body's three project keys (two trainers, two config trees)."""
    grpo = OmegaConf.to_container(launch.compose(PAPER).trainer)
    for recipe in ("sft_qwen2_5_vl_7b", "sft_tiny"):
        sft = OmegaConf.to_container(launch.compose(recipe).trainer)
        assert (
            sft["project_name"] == grpo["project_name"]
            and sft["default_local_dir"] == grpo["default_local_dir"]
        )
    assert OmegaConf.to_container(launch.compose("sft_qwen2_5_vl_7b").trainer)["logger"] == grpo["logger"]


def test_tiny_assets_reuse_a_model_only_when_it_was_built_for_the_recipe(tmp_path):
    """A folder of another size (a --quick demo, `make tiny`, an older run) is rebuilt, not trained on."""
    import json

    from recipes import tiny_assets

    base = [f"assets.data.dir={tmp_path}/data", f"assets.model.dir={tmp_path}/vlm"]
    small = [*base, "assets.data.train=8", "assets.data.val=2", "assets.model.text_hidden=32"]
    model = tiny_assets.ensure(launch.compose(TINY, small), progress=False)["model"]
    stamp = (model / "model.safetensors").stat().st_mtime_ns
    assert tiny_assets.ensure(launch.compose(TINY, small), progress=False)["model"] == model
    assert (model / "model.safetensors").stat().st_mtime_ns == stamp  # reused
    wider = [*small[:-1], "assets.model.text_hidden=64"]
    tiny_assets.ensure(launch.compose(TINY, wider), progress=False)
    assert json.loads((model / tiny_assets.MODEL_MANIFEST).read_text())["text_hidden"] == 64
    (model / tiny_assets.MODEL_MANIFEST).unlink()  # what `make tiny` leaves: no manifest
    tiny_assets.ensure(launch.compose(TINY, wider), progress=False)
    assert (model / tiny_assets.MODEL_MANIFEST).is_file()
    assert not list(tmp_path.glob(".vlm.*"))  # no temp folder left beside it


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40).filter(
        lambda v: "${" not in v
    )
)
def test_hydra_string_survives_hydras_override_parser(value):
    """An environment value reaches verl's ray.init as exactly that string (backslashes and quotes too)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(f"k={launch.hydra_string(value)}")
    assert parsed.value() == value


def test_wandb_resumes_the_run_of_the_checkpoint_it_resumes_from(tmp_path):
    """The W&B id lives in the checkpoint folder verl resumes from: a resumed run continues its W&B run,
    a run from scratch gets a new one, and two runs sharing a metrics folder never share an id."""
    shared = {**os.environ, "VERL_FILE_LOGGER_PATH": str(tmp_path / "run" / "metrics.jsonl")}
    shared.pop("WANDB_RUN_ID", None)

    def plan_for(name: str) -> launch.LaunchPlan:
        return launch.plan(TINY, [f"trainer.default_local_dir={tmp_path / name}"], environ=shared)

    first = plan_for("a")
    assert first.env["WANDB_RESUME"] == "allow"
    launch.start_run_files(first)
    stored = (tmp_path / "a" / "wandb_run_id").read_text().strip()
    assert stored == first.env["WANDB_RUN_ID"]
    other = plan_for("b")
    assert other.env["WANDB_RUN_ID"] != stored  # same metrics folder, another run
    (tmp_path / "a" / "global_step_2").mkdir()
    (tmp_path / "a" / "latest_checkpointed_iteration.txt").write_text("2")
    assert launch.resumes(first.config) and plan_for("a").env["WANDB_RUN_ID"] == stored
    given = launch.worker_env(first.config, {**shared, "WANDB_RUN_ID": "mine"})
    assert given["WANDB_RUN_ID"] == "mine"
