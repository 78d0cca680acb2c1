"""The SFT cold start: chat splitting, target encoding, and a few real optimizer steps on verl batches."""

from __future__ import annotations

import copy

import pytest
import torch

from recipes.sft import encode_targets, split_chat


def test_split_chat_takes_the_last_assistant_message():
    chat = [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "<think>x</think>"}]
    prompt, answer = split_chat(chat)
    assert prompt == chat[:1] and answer == "<think>x</think>"


def test_split_chat_rejects_a_chat_without_answer():
    with pytest.raises(ValueError, match="assistant"):
        split_chat([{"role": "user", "content": "hi"}])


def test_encode_targets_ends_each_answer_with_end_of_turn(tiny_vlm_dir):
    from transformers import AutoProcessor

    tok = AutoProcessor.from_pretrained(tiny_vlm_dir).tokenizer
    ids, mask = encode_targets(tok, ["<action>[]</action>", "<think>a longer answer here</think>"])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for row, m in zip(ids, mask, strict=True):
        n = int(m.sum())
        assert row[n - 1] == im_end and (row[n:] == tok.pad_token_id).all()


@pytest.fixture(scope="module")
def sft_setup(tmp_path_factory):
    from data_prep.synthetic import write_dataset
    from recipes.cpu_grpo import compose, prepare_model

    tmp = tmp_path_factory.mktemp("sft")
    cfg = compose(
        [
            f"cpu.data.dir={tmp}/data",
            f"cpu.model.dir={tmp}/model",
            "cpu.model.text_hidden=64",
            f"cpu.out_dir={tmp}/run",
        ]
    )
    write_dataset(tmp / "data", train=8, val=2, seed=0, progress=False)
    return cfg, prepare_model(cfg)


def test_train_sft_lowers_the_loss_on_verl_batches(sft_setup):
    from recipes.cpu_checkpoint import load_policy
    from recipes.sft import endless, sft_batch, sft_dataloader, sft_files, sft_loss, train_sft

    cfg, model_dir = sft_setup
    torch.manual_seed(0)
    model, processor = load_policy(model_dir)
    loader = sft_dataloader(cfg, processor.tokenizer, processor, sft_files(cfg), batch_size=8, seed=0)
    batch = next(iter(loader))
    fixed = sft_batch(processor, batch)
    with torch.no_grad():
        before = float(sft_loss(model, processor.tokenizer, fixed))
    logged = []
    stats = train_sft(
        model,
        processor,
        endless([batch]),
        steps=6,
        lr=3e-3,
        warmup_steps=0,
        on_step=lambda step, m: logged.append((step, m["sft/loss"])),
        progress=False,
    )
    with torch.no_grad():
        after = float(sft_loss(model, processor.tokenizer, fixed))
    assert stats["steps"] == 6 and [s for s, _ in logged] == list(range(1, 7))
    assert after < before - 0.5


def test_sft_stage_saves_a_loadable_folder_and_is_reused(sft_setup, tmp_path):
    from transformers import AutoModelForImageTextToText

    from recipes.cpu_checkpoint import STAGE_RECORD
    from recipes.sft import run_sft_stage

    cfg, model_dir = copy.deepcopy(sft_setup)
    cfg.cpu.sft.steps = 2
    cfg.cpu.sft.batch_size = 4
    folder = tmp_path / "sft"
    record = run_sft_stage(cfg, model_dir, folder, progress=False)
    assert record["steps"] == 2 and (folder / STAGE_RECORD).is_file()
    AutoModelForImageTextToText.from_pretrained(folder)
    assert not list(tmp_path.glob(".sft.tmp-*"))  # written atomically, nothing left behind
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert run_sft_stage(cfg, model_dir, folder, progress=False)["steps"] == 2
    assert (folder / "model.safetensors").stat().st_mtime == mtime


def test_sft_files_names_the_missing_parquet(sft_setup, tmp_path):
    from recipes.sft import sft_files

    cfg = copy.deepcopy(sft_setup[0])
    cfg.cpu.data.dir = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="sft_train.parquet"):
        sft_files(cfg)


def test_sft_control_continues_for_a_wall_time_budget(sft_setup, tmp_path):
    from recipes.cpu_checkpoint import stage_record
    from recipes.sft import run_sft_control, run_sft_stage

    cfg, model_dir = copy.deepcopy(sft_setup)
    cfg.cpu.sft.steps = 1
    cfg.cpu.sft.batch_size = 4
    run_sft_stage(cfg, model_dir, tmp_path / "sft", progress=False)
    record = run_sft_control(cfg, tmp_path / "sft", tmp_path / "control", seconds=0.5, progress=False)
    assert record["stage"] == "sft_control" and record["steps"] >= 1 and record["budget_seconds"] == 0.5
    assert stage_record(tmp_path / "control")["steps"] == record["steps"]
