"""The image budget (issue 12, defect 6): the arithmetic is Qwen2.5-VL's, the recipe's bound holds its
max_prompt_length, the budget check counts exactly the rows verl's own overlong filter drops (a parquet
with a 4032x3024 photo), and data_prep resizes to the bound and reports rows still over it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from data_prep import budget
from recipes import launch

PAPER = "imageedit_r1_qwen2_5_vl_7b"
#: Qwen2.5-VL-7B-Instruct's preprocessor_config.json bounds (the processor verl builds from the model).
QWEN2_5_VL_MIN_PIXELS, QWEN2_5_VL_MAX_PIXELS = 3136, 12845056
SIZES = [(512, 512), (1024, 1024), (1080, 1920), (3024, 4032)]  # (height, width); the last a phone photo


def test_token_arithmetic_is_qwen2_5_vls():
    # the figures: 1024x1024 -> 1,369 tokens, 1920x1080 -> 2,691, 3024x4032 -> 15,552
    assert budget.image_tokens(1024, 1024) == 1369
    assert budget.image_tokens(1080, 1920) == 2691
    assert budget.image_tokens(3024, 4032) == 15552
    assert budget.max_pixels_for(2048, 512) == 1536 * 28 * 28 == budget.PAPER_MAX_PIXELS
    assert budget.image_tokens(3024, 4032, max_pixels=budget.PAPER_MAX_PIXELS) <= 1536
    assert budget.max_pixels_for(2048, 512, patch_size=16) == 1536 * 32 * 32
    with pytest.raises(ValueError, match="no room"):
        budget.max_pixels_for(512, 512)


@pytest.mark.parametrize("model", ["qwen2_5_vl_7b", "qwen2_5_vl_3b", "qwen3_vl_8b"])
def test_recipe_bound_holds_max_prompt_length_and_reaches_the_processor(model):
    cfg = launch.compose(PAPER, [f"model={model}"])
    b = budget.recipe_budget(cfg)
    assert b.max_pixels == budget.max_pixels_for(b.max_prompt_length, b.text_tokens, b.patch_size)
    assert cfg.data.mm_processor_kwargs.max_pixels == cfg.image_budget.max_pixels  # the processor's bound
    assert budget.recipe_budget_problem(cfg) is None
    shorter = launch.compose(PAPER, [f"model={model}", "data.max_prompt_length=1024"])
    assert "image_budget.max_pixels=" in budget.recipe_budget_problem(shorter)


def photo_png(height: int, width: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def qwen_processor(tmp_path_factory):
    """The tiny Qwen2.5-VL's processor with Qwen2.5-VL-7B's real pixel bounds."""
    from transformers import AutoProcessor

    from inference.tiny import TinyVLMSize, build_tiny_vlm

    size = TinyVLMSize(min_pixels=QWEN2_5_VL_MIN_PIXELS, max_pixels=QWEN2_5_VL_MAX_PIXELS)
    folder = build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "vlm", size=size)
    return AutoProcessor.from_pretrained(folder)


@pytest.fixture(scope="module")
def photo_parquet(tmp_path_factory) -> Path:
    from data_prep.writers import TrainingExample, write_training_sets
    from inference.protocol import Decomposition

    out = tmp_path_factory.mktemp("rl")
    gt = Decomposition(actions=("recolor",), subjects=("sky",), goals=("orange",))
    examples = [
        TrainingExample(f"row{i}", "realedit", "make the sky orange", photo_png(h, w), gt)
        for i, (h, w) in enumerate(SIZES)
    ]
    write_training_sets(out, examples, "train", sft=False, easyr1=False)
    return out / "train.parquet"


def verl_kept_rows(parquet: Path, processor, data_config) -> int:
    """Rows verl 0.9.1's own RLHFDataset keeps after its overlong filter."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.merge(
        OmegaConf.create(OmegaConf.to_container(data_config, resolve=True)),
        {
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": None,  # in-process (a forked pool can deadlock in pytest)
            "cache_dir": str(parquet.parent / ".cache"),
        },
    )
    return len(RLHFDataset(str(parquet), processor.tokenizer, config, processor))


@pytest.mark.parametrize("bound", ["none", "recipe"])
def test_budget_check_counts_exactly_the_rows_verls_filter_drops(photo_parquet, qwen_processor, bound):
    overrides = [f"data.train_files={photo_parquet}"]
    if bound == "none":  # what the recipe was before: no bound for the processor
        overrides.append("~data.mm_processor_kwargs.max_pixels")
    cfg = launch.compose(PAPER, overrides)
    ours = budget.overlong_rows([photo_parquet], qwen_processor, cfg.data)
    kept = verl_kept_rows(photo_parquet, qwen_processor, cfg.data)
    assert ours.rows == len(SIZES)
    assert ours.overlong == len(SIZES) - kept
    if bound == "none":
        assert ours.overlong == 2 and ours.longest > 15552  # 1920x1080 and the 4032x3024 photo
        assert [r for r, _ in ours.examples] == [2, 3]
    else:
        assert ours.overlong == 0 and ours.longest <= cfg.data.max_prompt_length


def test_doctor_refuses_rows_verl_would_drop(photo_parquet, qwen_processor):
    from recipes import doctor

    files = [f"data.train_files={photo_parquet}", f"data.val_files={photo_parquet}"]
    cfg = launch.compose(PAPER, [*files, "~data.mm_processor_kwargs.max_pixels"])
    found = doctor.check_prompt_lengths(cfg, allow_overlong=False, processor=qwen_processor)
    assert found.status == "fail" and "2 of 4 rows" in found.detail and "--max-pixels" in found.fix, found
    assert doctor.check_prompt_lengths(cfg, allow_overlong=True, processor=qwen_processor).status == "warn"
    ok = launch.compose(PAPER, files)
    assert doctor.check_prompt_lengths(ok, allow_overlong=False, processor=qwen_processor).status == "ok"


def test_data_prep_resizes_to_the_budget_and_reports_rows_over_it(tmp_path):
    from data_prep.build import build_rl_data
    from inference.protocol import Decomposition
    from inference.records import Record, write_records

    records = tmp_path / "records"
    (records / "images").mkdir(parents=True)
    rows = []
    for i, (h, w) in enumerate([(3024, 4032), (512, 512)]):
        Image.new("RGB", (w, h), (10 * i, 50, 90)).save(records / "images" / f"r{i}.png")
        rows.append(
            Record(
                id=f"r{i}",
                source="realedit",
                instruction="make it brighter",
                image=records / "images" / f"r{i}.png",
                decomposition=Decomposition(actions=("brighten",), subjects=("image",), goals=("brighter",)),
            )
        )
    write_records(records, rows)
    report = build_rl_data(
        records, tmp_path / "fit", val_fraction=0.0, progress=False, max_pixels=budget.PAPER_MAX_PIXELS
    )
    assert report.kept == 2 and report.to_json()["normalised"].get("over_image_budget", 0) == 0
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "fit" / "train.parquet").to_pylist()
    tokens = [
        budget.image_tokens(*reversed(Image.open(io.BytesIO(r["images"][0]["bytes"])).size)) for r in table
    ]
    assert max(tokens) <= 1536 and sorted(tokens)[0] == budget.image_tokens(512, 512)
    # kept at full size (max_pixels None), the photo is reported as over the paper recipe's budget
    report = build_rl_data(records, tmp_path / "full", val_fraction=0.0, progress=False, max_pixels=None)
    assert report.to_json()["normalised"]["over_image_budget"] == 1
