"""`make export` (recipes/export.sh) merges a real verl FSDP checkpoint into a HuggingFace folder.

The checkpoint is made without GPUs: two gloo processes shard the tiny Qwen2.5-VL with FSDP2 on CPU and
save it through verl's own FSDPCheckpointManager, exactly the files the GPU trainer writes
(model_world_size_2_rank_{0,1}.pt with DTensor shards, fsdp_config.json, huggingface/)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SAVE_SHARDED_CHECKPOINT = textwrap.dedent(
    """
    import sys

    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    source, actor_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),), mesh_dim_names=("fsdp",))
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch.float32)
    for layer in model.model.language_model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    manager = FSDPCheckpointManager(
        model=model,
        optimizer=optimizer,
        lr_scheduler=None,
        processing_class=AutoProcessor.from_pretrained(source),
        checkpoint_config=OmegaConf.create({"save_contents": ["model", "optimizer", "extra"], "load_contents": ["model"]}),
    )
    manager.save_checkpoint(local_path=actor_dir, global_step=1)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def run_export(*args: str, timeout: int = 300, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("CKPT", "OUT")}
    full_env.update(env)
    return subprocess.run(
        ["bash", str(REPO / "recipes" / "export.sh"), *args],
        cwd="/",
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def fsdp_checkpoint(tiny_vlm_dir, tmp_path_factory) -> Path:
    """<root>/global_step_1/actor saved by verl's checkpoint manager from 2 CPU ranks."""
    root = tmp_path_factory.mktemp("ckpt")
    actor = root / "global_step_1" / "actor"
    script = root / "save.py"
    script.write_text(SAVE_SHARDED_CHECKPOINT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:  # torchrun's static rendezvous hangs on --master-port=0
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
    ]
    out = subprocess.run(
        [*launcher, f"--master-port={port}", str(script), str(tiny_vlm_dir), str(actor)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    (root / "latest_checkpointed_iteration.txt").write_text("1")
    return root


def test_export_merges_a_verl_fsdp_checkpoint_into_a_loadable_hf_folder(
    fsdp_checkpoint, tiny_vlm_dir, tmp_path
):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    actor = fsdp_checkpoint / "global_step_1" / "actor"
    assert sorted(p.name for p in actor.glob("model_world_size_*")) == [
        "model_world_size_2_rank_0.pt",
        "model_world_size_2_rank_1.pt",
    ]
    out = tmp_path / "hf"
    # CKPT as the run's checkpoint folder: the step comes from latest_checkpointed_iteration.txt
    result = run_export(CKPT=str(fsdp_checkpoint), OUT=str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert not Path(str(out) + ".partial").exists()

    merged = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    original = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir, dtype=torch.float32)
    merged_sd, original_sd = merged.state_dict(), original.state_dict()
    assert merged_sd.keys() == original_sd.keys()
    for key, value in original_sd.items():  # verl's merger writes bfloat16 (as the GPU trainer trains)
        assert torch.equal(merged_sd[key], value.to(torch.bfloat16).float()), key
    processor = AutoProcessor.from_pretrained(out)
    assert (
        processor.tokenizer.get_vocab() == AutoProcessor.from_pretrained(tiny_vlm_dir).tokenizer.get_vocab()
    )

    # never overwrites a finished export
    again = run_export(CKPT=str(fsdp_checkpoint / "global_step_1"), OUT=str(out))
    assert again.returncode == 2 and "exists" in again.stderr


def test_export_default_output_sits_next_to_the_actor(fsdp_checkpoint):
    result = run_export(str(fsdp_checkpoint / "global_step_1" / "actor"))
    assert result.returncode == 0, result.stderr[-4000:]
    out = fsdp_checkpoint / "global_step_1" / "huggingface_merged"
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert (out / "config.json").is_file()


def test_export_errors_name_the_problem(tmp_path):
    assert "CKPT is not set" in run_export(CKPT="").stderr
    missing = run_export(CKPT=str(tmp_path / "nope"))
    assert missing.returncode == 2 and f"checkpoint folder not found: {tmp_path / 'nope'}" in missing.stderr
    (tmp_path / "global_step_3" / "actor").mkdir(parents=True)
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7\n")
    wrong_step = run_export(CKPT=str(tmp_path))
    assert wrong_step.returncode == 2 and "names step 7" in wrong_step.stderr
    not_fsdp = run_export(CKPT=str(tmp_path / "global_step_3"))
    assert not_fsdp.returncode == 2 and "no fsdp_config.json" in not_fsdp.stderr
    (tmp_path / "global_step_3" / "actor" / "fsdp_config.json").write_text('{"world_size": 1}')
    no_shards = run_export(CKPT=str(tmp_path / "global_step_3"))
    assert no_shards.returncode == 2 and "no model shards" in no_shards.stderr


def test_the_exported_processor_sees_a_large_photo_as_training_did(fsdp_checkpoint, tiny_vlm_dir, tmp_path):
    """verl saves the processor without data.mm_processor_kwargs (workers/config/model.py:162); the
    launcher records the run's bound beside its checkpoints and export writes it into the merged
    processor, so inference (AutoProcessor, vLLM, `vllm serve` on the folder) gets the image tokens
    training got. Training's count is verl's (data_prep.budget: qwen_vl_utils' resize, then the
    processor with mm_processor_kwargs)."""
    import json

    from omegaconf import OmegaConf
    from PIL import Image
    from transformers import AutoProcessor

    from data_prep import budget
    from recipes import image_bound

    trained = {"min_pixels": 56 * 56, "max_pixels": 8 * 28 * 28}  # 8 tokens at most (the tiny default: 16)
    config = OmegaConf.create(
        {"data": {"mm_processor_kwargs": trained}, "trainer": {"default_local_dir": str(fsdp_checkpoint)}}
    )
    assert image_bound.record(config, REPO) == fsdp_checkpoint / "image_bound.json"
    out = tmp_path / "hf"
    result = run_export(CKPT=str(fsdp_checkpoint / "global_step_1"), OUT=str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "max_pixels=6272" in result.stderr
    saved = json.loads((out / "processor_config.json").read_text())["image_processor"]  # transformers 5
    assert saved["size"] == {"shortest_edge": trained["min_pixels"], "longest_edge": trained["max_pixels"]}

    photo = Image.new("RGB", (4032, 3024), (120, 90, 60))  # a 12 MP phone photo
    exported = AutoProcessor.from_pretrained(out).image_processor
    merge = exported.merge_size
    grid = exported(images=[photo], return_tensors="pt")["image_grid_thw"][0]
    inference_tokens = int(grid.prod()) // merge**2
    verl_view = AutoProcessor.from_pretrained(tiny_vlm_dir).image_processor  # what the checkpoint holds
    factor = verl_view.patch_size * merge
    h, w = budget._qwen_vl_smart_resize(photo.height, photo.width, factor)
    training_tokens = verl_view.get_number_of_image_patches(h, w, dict(trained)) // merge**2
    assert inference_tokens == training_tokens <= 8
    unbounded = verl_view(images=[photo], return_tensors="pt")["image_grid_thw"][0]
    assert int(unbounded.prod()) // merge**2 > training_tokens, "the test photo would not show the bug"
