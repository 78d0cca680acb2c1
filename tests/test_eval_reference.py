"""Reference metrics: PSNR/SSIM overall and outside the edited region, synthetic exactness, F1."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from eval.reference import PSNR_CAP_DB, decomposition_scores, edit_region, is_exact, reference_metrics
from inference.protocol import Decomposition, render_decomposition
from inference.scenes import render_scene
from inference.synthetic_items import make_item


@pytest.fixture(scope="module")
def item():
    return make_item(seed=0, index=6, min_edits=2, max_edits=2)  # remove + resize: a local edit


def test_perfect_output_is_exact_with_capped_psnr(item):
    metrics = reference_metrics(item.image, item.target_image, item.target_image)
    assert metrics["psnr"] == PSNR_CAP_DB and metrics["ssim"] == pytest.approx(1.0)
    assert metrics["psnr_outside"] == PSNR_CAP_DB and 0 < metrics["region_fraction"] < 1
    assert metrics["resized"] is False
    assert is_exact(item.target_image, item.target_image)


def test_unedited_output_is_perfect_outside_the_region_only(item):
    metrics = reference_metrics(item.image, item.image, item.target_image)
    assert metrics["psnr"] < 40 and metrics["ssim"] < metrics["ssim_outside"]
    assert metrics["psnr_outside"] == PSNR_CAP_DB and metrics["ssim_outside"] > 0.9
    assert not is_exact(item.image, item.target_image)


def test_damage_outside_the_region_lowers_the_outside_scores(item):
    damaged = np.asarray(item.target_image).copy()
    region = edit_region(item.image, item.target_image)
    damaged[~region] = 255 - damaged[~region]
    metrics = reference_metrics(item.image, Image.fromarray(damaged), item.target_image)
    assert metrics["psnr_outside"] < 15 and metrics["ssim_outside"] < 0.5


def test_region_is_where_input_and_reference_differ():
    a = Image.new("RGB", (32, 32), "white")
    b = a.copy()
    b.paste((0, 0, 0), (10, 10, 14, 14))
    assert edit_region(a, b, dilate=0).sum() == 16
    assert edit_region(a, b, dilate=1).sum() == 36
    assert not edit_region(a, a).any()


def test_exact_by_scene_even_when_pixels_differ(item):
    noisy = np.asarray(item.target_image).copy()
    noisy[0, 0] = noisy[0, 0] ^ 1
    output = Image.fromarray(noisy)
    output.info.update(item.target_image.info)  # the scene JSON travels with the image
    assert is_exact(output, item.target_image)
    assert not is_exact(Image.fromarray(noisy), item.target_image)
    assert render_scene(item.target_scene).info == item.target_image.info


def test_resized_output_is_compared_at_the_reference_size(item):
    big = item.target_image.resize((128, 128), Image.Resampling.NEAREST)
    metrics = reference_metrics(item.image, big, item.target_image)
    assert metrics["resized"] is True and metrics["psnr"] > 20


def test_decomposition_f1_comes_from_the_training_reward(item):
    truth = item.decomposition.to_ground_truth()
    perfect = decomposition_scores(render_decomposition(item.decomposition), truth)
    assert perfect["score"] == pytest.approx(1.0) and perfect["action"] == 1.0
    wrong = Decomposition(actions=("rotate",), subjects=truth["subjects"], goals=())
    partial = decomposition_scores(render_decomposition(wrong), truth)
    assert partial["action"] == 0.0 and partial["subject"] == 1.0 and partial["format"] == 1.0
    assert decomposition_scores(None, truth)["format"] == 0.0


def test_oracle_trace_without_raw_answer_scores_the_parsed_lists(item):
    from eval.reference import trace_decomposition_scores

    truth = item.decomposition.to_ground_truth()
    scores = trace_decomposition_scores({"raw": None, "parsed": {**truth, "think": ""}}, truth)
    assert scores["action"] == scores["subject"] == scores["goal"] == 1.0
    assert scores["format"] is None and scores["score"] is None
    raw = render_decomposition(item.decomposition)
    assert trace_decomposition_scores({"raw": raw, "parsed": None}, truth)["format"] == 1.0
