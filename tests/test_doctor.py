"""The preflight (`make doctor`, recipes/doctor.py) and the issue-12 defects it guards: vLLM engine
kwargs, the Qwen3-VL patch size, the reward override the docs show, settings verl ignores, the
environment choice of the Makefile, and the Slurm join wait."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipes import doctor, launch

REPO = Path(__file__).resolve().parents[1]
PAPER = "imageedit_r1_qwen2_5_vl_7b"
TINY = "imageedit_r1_tiny"
GPU_MODELS = ["qwen2_5_vl_7b", "qwen3_vl_8b", "qwen2_5_vl_3b"]
#: vLLM 0.24.0's EngineArgs fields (its source named in the file); the doctor uses it without vLLM.
ENGINE_ARGS = doctor.ENGINE_ARGS_FILE
pinned_engine_fields = doctor.pinned_engine_fields


# --- defect 1: vLLM 0.24.0 refuses unknown engine kwargs -----------------------------------------------


def test_field_list_is_vllm_0_24_0s_engine_args_and_names_its_source():
    header = [line for line in ENGINE_ARGS.read_text().splitlines() if line.startswith("#")]
    assert any("vllm-0.24.0" in line and "sha256" in line for line in header)
    assert any("vllm/engine/arg_utils.py" in line for line in header)
    fields = pinned_engine_fields()
    assert {"model", "tensor_parallel_size", "mm_processor_cache_gb", "mm_processor_kwargs"} <= fields
    assert "disable_mm_preprocessor_cache" not in fields  # gone in 0.24.0: `unrecognized arguments`


@pytest.mark.parametrize("model", GPU_MODELS)
def test_composed_recipe_holds_no_engine_kwarg_unknown_to_vllm_0_24_0(model):
    cfg = launch.compose(PAPER, [f"model={model}"])
    fields = pinned_engine_fields()
    assert doctor.unknown_engine_kwargs(cfg, fields) == []
    assert doctor.check_engine_kwargs(cfg, fields).status == "ok"


def test_doctor_names_an_unknown_engine_kwarg():
    cfg = launch.compose(
        PAPER, ["+actor_rollout_ref.rollout.engine_kwargs.vllm.disable_mm_preprocessor_cache=true"]
    )
    found = doctor.check_engine_kwargs(cfg, pinned_engine_fields())
    assert found.status == "fail" and "disable_mm_preprocessor_cache" in found.detail
    # without vLLM installed (this machine, a laptop running `make submit`) the pinned field list is used
    live = doctor.check_engine_kwargs(cfg)
    assert live.status == "fail" and "disable_mm_preprocessor_cache" in live.detail
    if doctor.installed_version("vllm") is None:
        assert "vllm_0_24_0_engine_args.txt" in live.detail


# --- defect 7: Qwen3-VL's 16-pixel patches ----------------------------------------------------------


def test_qwen3_vl_length_filter_uses_the_processors_patch_size():
    from inference.tiny import build_tiny_vlm

    assert launch.compose(PAPER).data.image_patch_size == 14
    cfg = launch.compose(PAPER, ["model=qwen3_vl_8b"])
    assert cfg.data.image_patch_size == 16
    # the patch size verl's agent loop reads from the processor (agent_loop.py:299), here from a
    # Qwen3-VL processor of the production class
    import tempfile

    from transformers import AutoProcessor

    with tempfile.TemporaryDirectory() as tmp:
        processor = AutoProcessor.from_pretrained(build_tiny_vlm(Path(tmp) / "q3", arch="qwen3_vl"))
    assert processor.image_processor.patch_size == cfg.data.image_patch_size


# --- defect 8: the documented reward override composes ----------------------------------------------

OVERRIDE = re.compile(r"\+?reward\.custom_reward_function\.reward_kwargs\.[\w.]+=[^\s`\"']+")


@pytest.mark.parametrize("doc", ["reward_fns/imageedit_r1.py", "reward_fns/README.md"])
def test_documented_reward_overrides_compose_with_the_recipe(doc):
    overrides = OVERRIDE.findall((REPO / doc).read_text())
    assert overrides, f"no reward_kwargs override example in {doc}"
    for override in overrides:
        cfg = launch.compose(PAPER, [override])  # Hydra: "Either remove + prefix" before the fix
        key, value = override.lstrip("+").split("=", 1)
        assert str(OmegaConf.select(cfg, key)) == value


# --- defect 9: settings with no effect ----------------------------------------------------------------


@pytest.mark.parametrize("model", GPU_MODELS)
def test_recipes_set_nothing_verl_ignores(model):
    cfg = launch.compose(PAPER, [f"model={model}"])
    assert doctor.check_settings(cfg) == []
    text = "\n".join(p.read_text() for p in (REPO / "recipes" / "config").rglob("*.yaml"))
    assert not re.search(r"^\s*truncation:", text, re.M)
    assert "enable_chunked_prefill: false" not in text
    assert OmegaConf.select(cfg, "actor_rollout_ref.rollout.enable_chunked_prefill") is True


def test_doctor_warns_about_settings_verl_ignores():
    cfg = launch.compose(
        PAPER,
        [
            "data.truncation=left",
            "actor_rollout_ref.ref.fsdp_config.param_offload=true",
            "actor_rollout_ref.rollout.enable_chunked_prefill=false",
        ],
    )
    found = doctor.check_settings(cfg)
    assert [f.status for f in found] == ["warn"] * 3
    text = " ".join(f.detail for f in found)
    assert "never reads it" in text and "always CPU-offloads" in text and "max_num_batched_tokens" in text


# --- the other checks ----------------------------------------------------------------------------------


def test_versions_are_checked_against_verls_own_extras():
    needs = doctor.verl_requirements(doctor.GPU_EXTRAS)
    assert (needs["torch"], needs["vllm"], needs["transformers"], needs["flash-attn"]) == (
        "==2.11.0",
        "==0.24.0",
        "==5.9.0",
        "==2.8.3",
    )
    gpu = doctor.check_versions(launch.compose(PAPER))
    if doctor.installed_version("vllm") is None:  # this CPU environment is not a GPU one
        assert gpu.status == "fail" and "vllm missing" in gpu.detail and "make setup-gpu" in gpu.fix
    assert doctor.check_versions(launch.compose(TINY)).status == "ok"  # no GPU packages demanded


def test_gpu_count_against_nodes_and_gpus():
    cfg = launch.compose(PAPER)
    assert doctor.check_local_gpus(cfg, available=8).status == "ok"
    assert doctor.check_local_gpus(cfg, available=4).status == "fail"
    found = doctor.check_local_gpus(launch.compose(PAPER, ["trainer.nnodes=2"]), available=8)
    assert found.status == "fail" and "RAY_ADDRESS" in found.fix


def test_doctor_accepts_the_cpu_recipe_without_gpus(tmp_path):
    p = launch.plan(TINY, [f"assets.data.dir={tmp_path}"])
    findings = doctor.run_checks(p)
    assert not doctor.failed(findings), doctor.report(findings)
    assert {f.check: f.status for f in findings}["gpus"] == "skip"


def test_secrets_set_here_are_named_when_workers_will_not_see_them():
    found = doctor.check_secrets({"WANDB_API_KEY": "k", "WANDB_MODE": "online", "HOME": "/h"})
    assert [f.status for f in found] == ["warn"] and "WANDB_API_KEY" in found[0].detail
    assert doctor.check_secrets({"WANDB_MODE": "offline"}) == []


def test_dry_run_downgrades_machine_checks_only():
    p = launch.plan(PAPER, ["+actor_rollout_ref.rollout.engine_kwargs.vllm.no_such_flag=1"], nodes=1, gpus=8)
    findings = doctor.run_checks(p, dry_run=True, engine_fields=pinned_engine_fields())
    status = {f.check: f.status for f in findings}
    assert status["engine_kwargs"] == "fail"  # a recipe error fails a dry run too
    assert status["gpus"] in ("ok", "warn") and status["versions"] in ("ok", "warn")


def test_make_doctor_runs_the_preflight():
    out = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "doctor", f"RECIPE={TINY}"],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DRY_RUN")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "# doctor: passed" in out.stdout and "SKIP  gpus: CPU recipe" in out.stdout


# --- defect 2: one environment per machine ------------------------------------------------------------


def make_n(folder: Path, *args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHON")}
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=folder,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The Makefile, the launch defaults it includes and the requirement files in a folder of their own
    (make -n runs nothing)."""
    (tmp_path / "recipes").mkdir()
    for name in ("Makefile", "requirements.txt", "requirements-gpu.txt", "recipes/defaults.env"):
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def fake_venv(folder: Path, stamp: str) -> None:
    (folder / ".venv" / "bin").mkdir(parents=True)
    (folder / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
    (folder / ".venv" / "bin" / "python").chmod(0o755)
    (folder / ".venv" / stamp).write_text("")


@pytest.mark.parametrize("target", ["train", "submit", "export", "doctor", "test"])
def test_gpu_environment_never_installs_the_cpu_requirements(checkout, target):
    fake_venv(checkout, ".installed-gpu")
    text = make_n(checkout, target)
    assert "requirements.txt" not in text and "pip install" not in text
    if target in ("train", "submit", "export"):
        assert "PYTHON=.venv/bin/python bash recipes/" in text


@pytest.mark.parametrize("how", ["PYTHON", "VIRTUAL_ENV"])
def test_a_chosen_environment_is_used_as_it_is(checkout, how):
    gpu = checkout / "gpu-env"
    if how == "PYTHON":
        text = make_n(checkout, "train", f"PYTHON={gpu}/bin/python")
    else:
        text = make_n(checkout, "train", VIRTUAL_ENV=str(gpu))
    assert "pip install" not in text
    assert f"PYTHON={gpu}/bin/python bash recipes/train.sh" in text


def test_cpu_machine_still_sets_up_dotvenv_for_demo_and_test(checkout):
    for target in ("demo", "test", "train"):
        text = make_n(checkout, target)
        assert "pip install --disable-pip-version-check -q -r requirements.txt" in text
    assert "requirements-gpu.txt" in make_n(checkout, "setup-gpu")


def test_the_two_setups_refuse_each_others_environment(checkout):
    fake_venv(checkout, ".installed-gpu")
    out = subprocess.run(
        ["make", ".venv/.installed"], cwd=checkout, capture_output=True, text=True, timeout=30
    )
    assert out.returncode != 0 and "GPU environment" in out.stderr


def test_launchers_run_the_trainer_in_their_own_interpreter():
    import sys

    assert launch.default_python() == sys.executable
    for script in ("train.sh", "submit.sh", "export.sh", "slurm/train.slurm"):
        text = (REPO / "recipes" / script).read_text()
        assert "env.sh" in text and ".venv/bin/python" not in text, script


# --- the model's weights are there before Ray starts ---------------------------------------------------


def _hub_cache(root: Path, repo: str, shards: int = 2, present: int = 2) -> Path:
    """A Hugging Face cache holding `repo`'s config.json and `present` of its `shards` weight files,
    laid out as huggingface_hub lays it out."""
    import json

    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("abc123")
    snapshot = folder / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"torch_dtype": "bfloat16"}')
    names = [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]
    (snapshot / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {f"w{i}": n for i, n in enumerate(names)}})
    )
    for name in names[:present]:
        (snapshot / name).write_bytes(b"\0" * 1000)
    return root


def test_model_check_names_a_hub_model_that_is_not_cached_while_downloads_are_off(tmp_path):
    config = launch.compose(launch.DEFAULTS["DEFAULT_RECIPE"])
    empty = str(tmp_path / "empty")
    off = doctor.check_model(config, {"HF_HUB_OFFLINE": "1"}, cache_dir=empty)
    assert off.status == "fail" and "Qwen/Qwen2.5-VL-7B-Instruct" in off.detail
    assert "huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct" in off.fix and "HF_HUB_OFFLINE=0" in off.fix
    assert doctor.check_model(config, {"HF_HUB_OFFLINE": "0"}, cache_dir=empty).status == "warn"
    cache = str(_hub_cache(tmp_path / "hub", "Qwen/Qwen2.5-VL-7B-Instruct"))
    assert doctor.check_model(config, {"HF_HUB_OFFLINE": "1"}, cache_dir=cache).status == "ok"


def test_model_check_takes_local_folders_and_the_sft_key(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0")
    sft = launch.compose("sft_qwen2_5_vl_7b", [f"model.path={tmp_path}"])
    assert doctor.check_model(sft, {"HF_HUB_OFFLINE": "1"}).status == "ok"
    gone = launch.compose("sft_qwen2_5_vl_7b", [f"model.path={tmp_path}/nowhere"])
    result = doctor.check_model(gone, {"HF_HUB_OFFLINE": "1"})
    assert result.status == "fail" and "not found" in result.detail
    # the tiny recipes' model is built by the launcher just before the preflight
    assert (
        doctor.check_model(launch.compose("imageedit_r1_tiny", ["assets.model.dir=/nowhere"]), {}).status
        == "skip"
    )


# --- defect 10: Slurm waits for NODES nodes -----------------------------------------------------------


def test_wait_for_nodes_times_out_with_a_clear_error():
    with pytest.raises(launch.LaunchError, match=r"only 0 of 2 Ray node\(s\) joined .* within 1 s"):
        doctor.wait_for_nodes("127.0.0.1:9", 2, timeout=1, poll=0.2)


def test_slurm_script_waits_for_every_node_instead_of_sleeping():
    text = (REPO / "recipes" / "slurm" / "train.slurm").read_text()
    assert not re.search(r"^\s*sleep \d", text, re.M)
    assert '--wait-nodes "${#NODES[@]}" --timeout "$JOIN_TIMEOUT"' in text
    assert "--wait-nodes 1" in text  # the head, before the workers join it


# --- issue 20: no known false pass --------------------------------------------------------------------


def test_a_cache_with_config_json_but_not_every_shard_is_refused(tmp_path):
    config = launch.compose(PAPER)
    cache = str(_hub_cache(tmp_path / "hub", "Qwen/Qwen2.5-VL-7B-Instruct", shards=2, present=1))
    found = doctor.check_model(config, {"HF_HUB_OFFLINE": "1"}, cache_dir=cache)
    assert found.status == "fail" and "1 of 2 weight files missing" in found.detail
    assert "huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct" in found.fix
    folder = tmp_path / "local"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    local = doctor.check_model(launch.compose(PAPER, [f"actor_rollout_ref.model.path={folder}"]), {})
    assert local.status == "fail" and "no weights" in local.detail


def test_overlong_validation_rows_and_an_absent_processor_are_refused(tiny_vlm_dir, tmp_path):
    """verl filters data.val_files as it filters train_files; without the processor the rows are
    uncounted, which is refused (ALLOW_OVERLONG=1 to start anyway) instead of skipped."""
    import pandas as pd
    from transformers import AutoProcessor

    def rows(text: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "prompt": [[{"role": "user", "content": text}]],
                "data_source": ["x"],
                "reward_model": [{"ground_truth": ""}],
            }
        )

    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    rows("short").to_parquet(train)
    rows("long " * 400).to_parquet(val)
    args = [
        f"data.train_files={train}",
        f"data.val_files={val}",
        f"actor_rollout_ref.model.path={tiny_vlm_dir}",
        "data.max_prompt_length=64",
        "data.filter_overlong_prompts=true",
    ]
    config = launch.compose(PAPER, args)
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    found = doctor.check_prompt_lengths(config, allow_overlong=False, processor=processor)
    assert (
        found.status == "fail" and "data.val_files" in found.detail and "data.train_files" not in found.detail
    )
    assert "--max-pixels" in found.fix
    elsewhere = launch.compose(PAPER, [*args[:2], "actor_rollout_ref.model.path=nobody/absent-model"])
    uncounted = doctor.check_prompt_lengths(elsewhere, allow_overlong=False)
    assert uncounted.status == "fail" and "uncounted" in uncounted.detail
    assert (
        "huggingface-cli download nobody/absent-model" in uncounted.fix
        and "ALLOW_OVERLONG=1" in uncounted.fix
    )
    assert doctor.check_prompt_lengths(elsewhere, allow_overlong=True).status == "warn"


def test_flash_attn_is_imported_not_read_from_metadata():
    """A wheel built for another torch installs (metadata present) and then fails to import in every
    worker: the check imports it; the sdpa route needs none and says what it costs."""
    config = launch.compose(PAPER)
    broken = doctor.check_attention(config, import_error="ImportError: undefined symbol: _ZN3c10...")
    assert broken.status == "fail" and "undefined symbol" in broken.detail
    assert "FLASH_ATTN_WHEEL" in broken.fix and all(o in broken.fix for o in doctor.SDPA_OVERRIDES)
    assert doctor.check_attention(config, import_error=None).status == "ok"
    live = doctor.check_attention(config)  # this machine: no flash-attn (a CPU environment)
    if doctor.installed_version("flash-attn") is None:
        assert live.status == "fail" and "does not import" in live.detail
    sdpa = doctor.check_attention(launch.compose(PAPER, list(doctor.SDPA_OVERRIDES)))
    assert sdpa.status == "warn" and "padded to" in sdpa.detail and "micro_batch" in sdpa.fix
    assert (
        "flash-attn"
        not in doctor.check_versions(launch.compose(PAPER, list(doctor.SDPA_OVERRIDES))).detail.split(";", 1)[
            -1
        ]
    )


def test_no_gpu_names_an_old_driver_for_torchs_cuda():
    old = doctor.driver_problem(torch_cuda="13.0", driver="570.86.15")
    assert "570.86.15" in old and ">= 580.65.6" in old
    assert doctor.driver_problem(torch_cuda="13.0", driver="580.95.05") == ""
    assert "nvidia-smi not found" in doctor.driver_problem(torch_cuda="13.0", driver=None)
    assert "CPU-only build" in doctor.driver_problem(torch_cuda=None)
    found = doctor.check_local_gpus(launch.compose(PAPER), available=0, diagnosis=old)
    assert found.status == "fail" and "older than CUDA 13.0" in found.detail and "driver" in found.fix


def test_checkpoint_retention_and_disk_estimate():
    config = launch.compose(PAPER)
    assert config.trainer.max_actor_ckpt_to_keep == 2
    found = doctor.check_checkpoints(config, params=8_292_166_656, free=10**12)
    assert (
        found.status == "ok"
        and "~99.5 GB per checkpoint" in found.detail
        and "for 2 checkpoint(s)" in found.detail
    )
    tight = doctor.check_checkpoints(config, params=8_292_166_656, free=100 * 10**9)
    assert tight.status == "warn" and "max_actor_ckpt_to_keep" in tight.fix
    keep_all = doctor.check_checkpoints(
        launch.compose(PAPER, ["trainer.max_actor_ckpt_to_keep=null"]), params=8_292_166_656, free=10**13
    )
    assert keep_all.status == "warn" and "max_actor_ckpt_to_keep=2" in keep_all.fix


def test_the_engine_kwargs_check_never_skips_for_want_of_vllm():
    cfg = launch.compose(PAPER)
    fields, source = doctor.vllm_engine_fields()
    assert fields and ("0.24.0" in source)
    assert doctor.check_engine_kwargs(cfg).status == "ok"
