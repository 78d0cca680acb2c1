"""The training-data writers, loaded by verl 0.9.1's own datasets with the tiny Qwen2.5-VL processor."""

from __future__ import annotations

import io
import json

import datasets
import pyarrow.parquet as pq
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from data_prep.synthetic import write_dataset
from data_prep.writers import verl_image_support_problem
from inference.prompts import IMAGE_PLACEHOLDER
from inference.protocol import Decomposition, check_format, parse_decomposition
from inference.records import read_records
from inference.scenes import scene_of

N_TRAIN, N_VAL = 48, 16


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    write_dataset(out, train=N_TRAIN, val=N_VAL, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def processor(tiny_vlm_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_vlm_dir)


def test_dataset_folder_layout(synthetic_dir):
    names = {p.name for p in synthetic_dir.iterdir()}
    expected = {"train.parquet", "val.parquet", "sft_train.parquet", "sft_val.parquet", "corpus.txt"}
    assert expected | {"easyr1_train.parquet", "eval", "manifest.json"} <= names
    assert (synthetic_dir / "eval" / "records.jsonl").is_file() and (
        synthetic_dir / "eval" / "images"
    ).is_dir()
    assert not [n for n in names if n.endswith(".tmp")]
    manifest = json.loads((synthetic_dir / "manifest.json").read_text())
    assert manifest["files"]["train.parquet"] == N_TRAIN
    assert pq.ParquetFile(synthetic_dir / "val.parquet").metadata.num_rows == N_VAL


def test_verl_rlhf_dataset_loads_every_row_and_collates(synthetic_dir, processor):
    assert verl_image_support_problem() is None, verl_image_support_problem()
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    config = OmegaConf.create(
        {
            "prompt_key": "prompt",
            "image_key": "images",
            "max_prompt_length": 1024,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": None,  # in-process: a forked pool can deadlock in a long pytest process
            "truncation": "error",
            "cache_dir": str(synthetic_dir / ".cache"),
        }
    )
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        dataset = RLHFDataset(str(synthetic_dir / f"{split}.parquet"), processor.tokenizer, config, processor)
        assert len(dataset) == n, f"verl kept {len(dataset)} of {n} {split} rows"
    rows = [dataset[i] for i in range(4)]
    batch = collate_fn(rows)
    assert batch["dummy_tensor"].shape == (4, 1)
    assert list(batch["index"]) == [0, 1, 2, 3]
    for row in rows:
        content = row["raw_prompt"][0]["content"]
        assert [c["type"] for c in content] == ["image", "text"]
        assert isinstance(content[0]["image"], Image.Image)
        gt = Decomposition.from_ground_truth(row["reward_model"]["ground_truth"])
        assert gt.actions and row["data_source"] == "synthetic"
        assert row["extra_info"]["request"] in content[1]["text"]
        assert row["extra_info"]["plan"]
    # the prompt goes through the processor exactly as verl's length filter sends it
    images, _, _ = RLHFDataset._process_multi_modal_info(rows[0]["raw_prompt"], 14, config)
    text = processor.apply_chat_template(rows[0]["raw_prompt"], add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=images, return_tensors="pt")
    assert int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) > 0


def test_verl_sft_dataset_reads_the_cold_start_rows(synthetic_dir, processor):
    assert verl_image_support_problem() is None, verl_image_support_problem()
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    config = OmegaConf.create({"max_length": 1024, "truncation": "error", "messages_key": "messages"})
    dataset = MultiTurnSFTDataset(
        str(synthetic_dir / "sft_train.parquet"), processor.tokenizer, config, processor
    )
    assert len(dataset) == N_TRAIN
    item = dataset[0]
    mask = item["loss_mask"].bool()
    trained = processor.tokenizer.decode(item["input_ids"][mask])
    answer = pq.read_table(synthetic_dir / "sft_train.parquet").to_pylist()[0]["messages"][1]["content"]
    assert answer in trained and check_format(answer)
    assert "pixel_values" in item["multi_modal_inputs"]
    assert item["position_ids"].shape[0] == 4  # Qwen-VL mrope position ids


def test_easyr1_rows_follow_its_schema(synthetic_dir):
    table = datasets.load_dataset("parquet", data_files=str(synthetic_dir / "easyr1_train.parquet"))["train"]
    assert {"prompt", "answer", "images"} <= set(table.column_names)
    for row in table.select(range(8)):
        assert isinstance(row["prompt"], str)
        assert row["prompt"].count(IMAGE_PLACEHOLDER) == len(row["images"]) == 1
        Decomposition.from_ground_truth(row["answer"])
        image = Image.open(io.BytesIO(row["images"][0]["bytes"]))
        assert image.size == (64, 64)


def test_rl_and_sft_rows_agree(synthetic_dir):
    rl = pq.read_table(synthetic_dir / "train.parquet").to_pylist()
    sft = pq.read_table(synthetic_dir / "sft_train.parquet").to_pylist()
    for a, b in zip(rl, sft, strict=True):
        assert a["extra_info"]["id"] == b["id"]
        assert a["prompt"][0]["content"] == b["messages"][0]["content"]
        assert a["prompt"][0]["content"].count(IMAGE_PLACEHOLDER) == len(a["images"]) == 1
        parsed = parse_decomposition(b["messages"][1]["content"]).to_decomposition()
        assert parsed.to_json() == a["reward_model"]["ground_truth"]
    assert [r["extra_info"]["index"] for r in rl] == list(range(N_TRAIN))


def test_eval_records_hold_input_target_and_ground_truth(synthetic_dir):
    records = list(read_records(synthetic_dir / "eval"))
    assert len(records) == N_VAL
    for record in records[:5]:
        assert record.image.is_absolute() and record.image.is_file()
        image = record.load_image()
        assert image.mode == "RGB"
        with Image.open(record.image) as raw, Image.open(record.references[0]) as target:
            assert scene_of(raw) is not None and scene_of(target) is not None
        assert record.decomposition is not None and record.plan is not None


def test_corpus_trains_a_tokenizer_that_keeps_answers_short(synthetic_dir):
    from inference.tiny import build_tokenizer

    lines = (synthetic_dir / "corpus.txt").read_text().splitlines()
    tokenizer = build_tokenizer(lines[:2000])
    answer = pq.read_table(synthetic_dir / "sft_train.parquet").to_pylist()[0]["messages"][1]["content"]
    assert len(tokenizer(answer)["input_ids"]) < 60
    assert torch.tensor(tokenizer(answer)["input_ids"]).numel() > 0


def test_rl_rows_built_from_benchmark_records_load_in_verl(tmp_path, processor):
    """Real-photo-sized images from a records folder (the benchmark path) also pass verl's filter."""
    assert verl_image_support_problem() is None, verl_image_support_problem()
    import numpy as np
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    from data_prep.build import build_rl_data
    from inference.protocol import EditPlan
    from inference.records import Record, write_records

    folder = tmp_path / "records"
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(6):
        path = folder / "images" / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (180 + 10 * i, 260, 3), dtype=np.uint8)).save(path)
        gt = Decomposition(("recolor",), (f"car {i}",), ("red",))
        records.append(
            Record(f"r{i}", "realedit", f"make car {i} red", path, (), gt, EditPlan((f"Recolor car {i}",)))
        )
    write_records(folder, records)
    out = tmp_path / "rl"
    report = build_rl_data(folder, out, val_fraction=0.0, max_side=224)
    assert report.kept == 6
    config = OmegaConf.create(
        {"max_prompt_length": 1024, "filter_overlong_prompts": True, "filter_overlong_prompts_workers": None}
    )
    dataset = RLHFDataset(str(out / "train.parquet"), processor.tokenizer, config, processor)
    assert len(dataset) == 6
    batch = collate_fn([dataset[i] for i in range(len(dataset))])
    assert sorted(batch["extra_info"][i]["id"] for i in range(6)) == [f"r{i}" for i in range(6)]
    assert max(dataset[0]["raw_prompt"][0]["content"][0]["image"].size) <= 224
