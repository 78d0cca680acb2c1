"""Hypothesis properties of the reward: range and keys for any input, invariances, symmetry, the
ordered normaliser against the set one, and the soft modes' relation to exact."""

from __future__ import annotations

import json
import random
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from inference.protocol import ALL_TAG_STRINGS, Decomposition, render_decomposition
from reward_fns.components import REWARD_COMPONENTS, SCORE_KEY
from reward_fns.imageedit_r1 import compute_score, compute_score_batch
from reward_fns.matching import (
    UNICODE_WHITESPACE,
    normalise_item,
    normalise_items,
    normalise_items_ordered,
    set_f1,
)
from reward_fns.soft_matching import soft_f1, token_similarity

KEYS = [SCORE_KEY, *REWARD_COMPONENTS]
CONTENT = ("action", "subject", "goal")

# Text rich in the pieces that matter: tags, separators, JSON punctuation, whitespace, Unicode.
PIECES = st.sampled_from(
    [
        *ALL_TAG_STRINGS,
        ",",
        ";",
        "\n",
        " ",
        "[",
        "]",
        '"',
        "\\",
        "red",
        "Coat",
        "ﬁ",
        "Σ",
        "\u0301",
        "\u00a0",
        "“",
    ]
)
TAGGY_TEXT = st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=40).map("".join)
ITEM = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=12)
WORDS = st.lists(
    st.sampled_from(["red", "dark red", "coat", "hair", "the hat", "blue sky", "lamp"]), max_size=5
)


def decomposition(actions, subjects, goals) -> Decomposition:
    return Decomposition(tuple(actions), tuple(subjects), tuple(goals), think="t")


def gt_json(actions, subjects, goals) -> str:
    return json.dumps({"actions": list(actions), "subjects": list(subjects), "goals": list(goals)})


@settings(max_examples=300, deadline=None)
@given(response=TAGGY_TEXT, gt=st.tuples(WORDS, WORDS, WORDS), mode=st.sampled_from(["exact", "fuzzy"]))
def test_any_response_gives_the_keys_as_floats_in_unit_interval(response, gt, mode):
    result = compute_score("s", response, gt_json(*gt), mode=mode)
    assert list(result) == KEYS
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in result.values())


@settings(max_examples=200, deadline=None)
@given(items=st.tuples(st.lists(ITEM, max_size=6), st.lists(ITEM, max_size=6), st.lists(ITEM, max_size=6)))
def test_rendered_ground_truth_scores_one(items):
    d = decomposition(*items)
    for mode in ("exact", "fuzzy"):
        assert compute_score("s", render_decomposition(d), d.to_json(), mode=mode) == dict.fromkeys(KEYS, 1.0)


@settings(max_examples=200, deadline=None)
@given(pred=st.tuples(WORDS, WORDS, WORDS), gt=st.tuples(WORDS, WORDS, WORDS), seed=st.integers(0, 2**16))
def test_permutation_duplicate_and_case_invariance(pred, gt, seed):
    rng = random.Random(seed)
    truth = gt_json(*gt)
    base = render_decomposition(decomposition(*pred))
    shuffled = [rng.sample(list(x), len(x)) for x in pred]
    doubled = [list(x) + list(x)[:2] for x in pred]
    shouted = [[w.upper() for w in x] for x in pred]
    for mode in ("exact", "fuzzy"):
        expected = compute_score("s", base, truth, mode=mode)
        for variant in (shuffled, doubled, shouted):
            got = compute_score("s", render_decomposition(decomposition(*variant)), truth, mode=mode)
            assert got == pytest.approx(expected)
    # case of the ground truth does not matter either
    upper_truth = gt_json(*[[w.upper() for w in x] for x in gt])
    assert compute_score("s", base, upper_truth) == compute_score("s", base, truth)


@settings(max_examples=200, deadline=None)
@given(a=st.frozensets(st.sampled_from("abcdefg")), b=st.frozensets(st.sampled_from("abcdefg")))
def test_set_f1_symmetric_and_bounded(a, b):
    assert set_f1(a, b) == set_f1(b, a)
    assert 0.0 <= set_f1(a, b) <= 1.0
    assert (set_f1(a, b) == 1.0) == (a == b)


@settings(max_examples=200, deadline=None)
@given(a=WORDS, b=WORDS)
def test_soft_f1_symmetric_and_at_least_exact(a, b):
    a, b = list(dict.fromkeys(a)), list(dict.fromkeys(b))
    assert soft_f1(a, b, token_similarity) == pytest.approx(soft_f1(b, a, token_similarity))
    assert soft_f1(a, b, token_similarity) >= set_f1(frozenset(a), frozenset(b)) - 1e-12


@settings(max_examples=200, deadline=None)
@given(response=TAGGY_TEXT, gt=st.tuples(WORDS, WORDS, WORDS))
def test_fuzzy_never_below_exact(response, gt):
    truth = gt_json(*gt)
    exact = compute_score("s", response, truth)
    fuzzy = compute_score("s", response, truth, mode="fuzzy")
    assert fuzzy["format"] == exact["format"]
    assert all(fuzzy[c] >= exact[c] - 1e-12 for c in CONTENT)


@settings(max_examples=200, deadline=None)
@given(think_a=TAGGY_TEXT, think_b=TAGGY_TEXT, answer=TAGGY_TEXT)
def test_text_inside_think_cannot_change_content_rewards(think_a, think_b, answer):
    assume("</think>" not in think_a + think_b)
    truth = gt_json(["red"], ["coat"], ["dark red"])
    a = compute_score("s", f"<think>{think_a}</think>{answer}", truth)
    b = compute_score("s", f"<think>{think_b}</think>{answer}", truth)
    assert [a[c] for c in CONTENT] == [b[c] for c in CONTENT]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(st.one_of(st.text(max_size=8), PIECES), min_size=1, max_size=80))
def test_ordered_normaliser_keeps_first_appearances_of_the_set(items):
    ordered = normalise_items_ordered(items)
    assert set(ordered) == normalise_items(items) and len(ordered) == len(set(ordered))
    firsts = [normalise_item(i) for i in items]
    assert [firsts.index(i) for i in ordered] == sorted(firsts.index(i) for i in ordered)


def test_the_whitespace_table_covers_every_code_point():
    """Every `str.isspace` character of all of Unicode is stripped from item ends."""
    whitespace = set(UNICODE_WHITESPACE)
    for code in range(sys.maxunicode + 1):
        assert chr(code).isspace() == (chr(code) in whitespace), hex(code)


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(st.tuples(TAGGY_TEXT, st.tuples(WORDS, WORDS, WORDS)), min_size=1, max_size=6))
def test_easyr1_batch_equals_per_sample(batch):
    inputs = [{"response": r, "response_length": len(r), "ground_truth": gt_json(*g)} for r, g in batch]
    for mode in ("exact", "fuzzy"):
        out = compute_score_batch(inputs, mode=mode)
        for item, result in zip(inputs, out, strict=True):
            single = compute_score("s", item["response"], item["ground_truth"], mode=mode)
            assert result == {"overall": single.pop(SCORE_KEY), **single}


@settings(max_examples=200, deadline=None)
@given(
    items=st.tuples(st.lists(ITEM, max_size=4), st.lists(ITEM, max_size=4), st.lists(ITEM, max_size=4)),
    gaps=st.lists(st.sampled_from([" ", "\n", "  \n\t", "\u3000" * 3]), min_size=3, max_size=3),
)
def test_valid_answers_with_any_separator_whitespace_keep_format(items, gaps):
    from inference.protocol import check_format

    rendered = render_decomposition(decomposition(*items)).split("\n")
    text = "".join(part + gap for part, gap in zip(rendered, [*gaps, ""], strict=True))
    assert check_format(text)
