"""Exact-mode rules of the ImageEdit-R1 reward (issue 3 spec), one small named case per rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.protocol import Decomposition, render_decomposition
from reward_fns.components import REWARD_COMPONENTS, SCORE_KEY
from reward_fns.imageedit_r1 import REWARD_TYPE, compute_score, compute_score_batch
from reward_fns.matching import normalise_item, normalise_items, set_f1

REPO = Path(__file__).resolve().parents[1]
KEYS = {SCORE_KEY, *REWARD_COMPONENTS}
GT = {"actions": ["recolor"], "subjects": ["coat", "hair"], "goals": ["scarlet red"]}
GT_JSON = json.dumps(GT)
GOOD = (
    '<think>the coat and hair</think>\n<action>["recolor"]</action>\n'
    '<subjects>["coat", "hair"]</subjects>\n<goals>["scarlet red"]</goals>'
)


def score(response, gt=GT_JSON, **kw):
    return compute_score("synthetic", response, gt, None, **kw)


# --- keys, perfect answer, entries ---------------------------------------------------------------


def test_perfect_answer_scores_one_with_exact_keys():
    result = score(GOOD)
    assert set(result) == KEYS
    assert result == {k: 1.0 for k in KEYS}
    assert all(type(v) is float for v in result.values())


def test_render_decomposition_round_trips_to_full_reward():
    d = Decomposition(("add", "remove"), ("lamp",), ("warm light", "no clutter"), think="t")
    assert score(render_decomposition(d), d.to_json())[SCORE_KEY] == 1.0


def test_ground_truth_may_be_a_dict():
    assert score(GOOD, GT)[SCORE_KEY] == 1.0


def test_easyr1_batch_entry():
    assert REWARD_TYPE == "batch"
    out = compute_score_batch(
        [
            {"response": GOOD, "response_length": 30, "ground_truth": GT_JSON},
            {"response": "nonsense", "response_length": 2, "ground_truth": GT_JSON},
        ]
    )
    assert [list(o) for o in out] == [["overall", *REWARD_COMPONENTS]] * 2
    assert out[0] == dict.fromkeys(["overall", *REWARD_COMPONENTS], 1.0)
    assert out[1]["overall"] == 0.0


@pytest.mark.parametrize("response", [None, b"<action>[]</action>", 12, "", " ", "<think>", "</think>" * 3])
def test_any_input_gives_all_keys_in_unit_interval(response):
    result = score(response)
    assert set(result) == KEYS
    assert all(0.0 <= v <= 1.0 for v in result.values())


# --- ground truth validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gt", "problem"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"actions": [], "subjects": []}', "goals"),
        ('{"actions": "recolor", "subjects": [], "goals": []}', "actions"),
        ('{"actions": [1], "subjects": [], "goals": []}', "actions"),
        (42, "JSON string or a mapping"),
    ],
)
def test_malformed_ground_truth_raises_value_error_naming_problem(gt, problem):
    with pytest.raises(ValueError, match=problem):
        score(GOOD, gt)


# --- format ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        GOOD,
        "<think></think><action>[]</action><subjects>[]</subjects><goals>[]</goals>",
        '  \n<think>x</think> \t <action>["a"]</action>\n\n<subjects>[]</subjects><goals>["g"]</goals>\n ',
        '<think>a, b; c</think><action> [ "a" ] </action><subjects>["s"]</subjects><goals>["g"]</goals>',
    ],
)
def test_format_one(response):
    assert score(response)["format"] == 1.0


@pytest.mark.parametrize(
    "response",
    [
        "x" + GOOD,  # text before
        GOOD + "x",  # text after
        GOOD.replace("\n<action>", " and <action>"),  # non-whitespace separator
        GOOD.replace("<think>the coat and hair</think>\n", ""),  # missing think
        '<action>["recolor"]</action><think>t</think><subjects>[]</subjects><goals>[]</goals>',  # order
        GOOD.replace('["recolor"]', "recolor"),  # not a JSON array
        GOOD.replace('["recolor"]', '["recolor", 3]'),  # non-string element
        GOOD.replace('["recolor"]', '{"a": 1}'),  # JSON but not an array
        GOOD.replace("the coat", "the <goals> coat"),  # a tag inside think
        GOOD.replace('["coat", "hair"]', '["coat", "</action>"]'),  # a tag inside a list
        GOOD + "\n<goals>[]</goals>",  # a repeated tag
        GOOD.replace("</goals>", ""),  # unclosed
    ],
)
def test_format_zero(response):
    assert score(response)["format"] == 0.0


# --- content --------------------------------------------------------------------------------------


def test_tags_are_read_after_first_think_close():
    spoof = '<think><action>["recolor"]</action></think><action>["remove"]</action>'
    assert score(spoof)["action"] == 0.0
    assert score('<action>["recolor"]</action>')["action"] == 1.0  # no </think>: whole response


def test_missing_tag_pair_gives_zero_for_that_component_only():
    result = score('<think></think><action>["recolor"]</action><subjects>["coat", "hair"]')
    assert result["action"] == 1.0
    assert result["subject"] == 0.0
    assert result["goal"] == 0.0


def test_first_open_then_first_close_after_it():
    result = score('<action>["recolor"]</action><action>["remove"]</action>')
    assert result["action"] == 1.0
    assert score("</action><action>recolor</action>")["action"] == 1.0


def test_json_array_drops_non_string_elements():
    assert score('<action>["recolor", 1, null, ["x"]]</action>')["action"] == 1.0


def test_non_json_content_splits_on_commas_semicolons_newlines():
    result = score("<subjects>coat; hair</subjects><goals>scarlet red\n</goals>")
    assert result["subject"] == 1.0
    assert result["goal"] == 1.0
    assert score("<subjects>coat,hair\nhat</subjects>")["subject"] == pytest.approx(0.8)


def test_normalisation_case_whitespace_punctuation_quotes_nfkc():
    response = (
        '<action>["  RECOLOR!! "]</action><subjects>["“Coat”", "\'hair\'."]</subjects>'
        '<goals>["Ｓｃａｒｌｅｔ \\t\\n  red"]</goals>'
    )
    result = score(response)
    assert (result["action"], result["subject"], result["goal"]) == (1.0, 1.0, 1.0)


def test_normalise_item_examples():
    assert normalise_item("  Scarlet   RED. ") == "scarlet red"
    assert normalise_item("“dark-red”") == "dark-red"
    assert normalise_item("ﬁre") == "fire"  # NFKC ligature
    assert normalise_item(" ... ") == ""
    assert normalise_item("a\u00a0\u3000b") == "a b"


def test_duplicates_and_empty_items_are_dropped():
    assert normalise_items(["Coat", "coat ", "", "  ", "!!", "hair"]) == {"coat", "hair"}
    assert score('<subjects>["coat", "COAT", "hair", ""]</subjects>')["subject"] == 1.0


# --- F1 -------------------------------------------------------------------------------------------


def test_f1_edge_cases():
    assert set_f1(frozenset(), frozenset()) == 1.0
    assert set_f1(frozenset({"a"}), frozenset()) == 0.0
    assert set_f1(frozenset(), frozenset({"a"})) == 0.0
    assert set_f1(frozenset({"a"}), frozenset({"b"})) == 0.0
    assert set_f1(frozenset({"a", "b"}), frozenset({"b", "c", "d"})) == pytest.approx(
        2 * 0.5 * (1 / 3) / (0.5 + 1 / 3)
    )


def test_empty_lists_both_sides_score_one_and_one_side_zero():
    gt = json.dumps({"actions": [], "subjects": ["coat"], "goals": []})
    result = score("<think></think><action>[]</action><subjects>[]</subjects><goals>[]</goals>", gt)
    assert (result["action"], result["subject"], result["goal"]) == (1.0, 0.0, 1.0)
    assert score("<action>[]</action>", GT_JSON)["action"] == 0.0
    assert score('<action>["x"]</action>', gt)["action"] == 0.0


# --- score and options ----------------------------------------------------------------------------


def test_score_is_mean_of_components_by_default():
    result = score(
        '<think></think><action>["recolor"]</action><subjects>["coat"]</subjects><goals>[]</goals>'
    )
    expected = (1.0 + 1.0 + 2 / 3 + 0.0) / 4
    assert result[SCORE_KEY] == pytest.approx(expected)


def test_weights_from_kwargs():
    response = '<think></think><action>["recolor"]</action><subjects>[]</subjects><goals>[]</goals>'
    result = score(response, weights={"format": 0.0, "action": 1.0, "subject": 0.0, "goal": 3.0})
    assert result[SCORE_KEY] == pytest.approx(0.25)
    assert score(response, weights={"goal": 2.0})[SCORE_KEY] == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"mode": "regex"}, "mode"),
        ({"weights": {"style": 1.0}}, "unknown components"),
        ({"weights": {"goal": -1.0}}, "non-negative"),
        ({"weights": dict.fromkeys(REWARD_COMPONENTS, 0.0)}, "positive sum"),
        ({"weights": [1, 2]}, "mapping"),
    ],
)
def test_bad_options_raise(kwargs, problem):
    with pytest.raises(ValueError, match=problem):
        score(GOOD, **kwargs)


def test_unknown_call_kwargs_from_verl_are_ignored():
    assert score(GOOD, reward_router_address=None, num_turns=1)[SCORE_KEY] == 1.0


# --- loading by path, speed -----------------------------------------------------------------------


def test_loads_by_path_through_verl_from_a_foreign_cwd(tmp_path):
    code = (
        "from verl.utils.import_utils import load_extern_object\n"
        f"fn = load_extern_object({str(REPO / 'reward_fns/imageedit_r1.py')!r}, 'compute_score')\n"
        f"print(fn('s', {GOOD!r}, {GT_JSON!r})['score'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1.0"


ADVERSARIAL = {
    "unclosed action flood": "<action>" * 130_000,
    "unclosed every tag": "<think><action><subjects><goals>" * 33_000,
    "huge think": "<think>" + "x" * 1_000_000 + "</think>" + GOOD,
    "close then open flood": "</think>" + "</action><action>" * 60_000,
    "one megabyte of commas": "<subjects>" + "," * 1_000_000 + "</subjects>",
    "bracket then commas (JSON fails late)": '<subjects>["a"' + "," * 1_000_000 + "</subjects>",
    "distinct items": "<goals>" + ",".join(f"g{i}" for i in range(150_000)) + "</goals>",
    "distinct unicode items": "<goals>"
    + ",".join(chr(0x4E00 + i % 20000) for i in range(500_000))
    + "</goals>",
    "json array of many items": '<goals>["' + '","'.join(f"g{i}" for i in range(120_000)) + '"]</goals>',
    "deep nesting": "<action>" + "[" * 1_000_000 + "</action>",
    "whitespace between tags": "<think></think>" + " " * 1_000_000 + "<action>[]</action>",
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_megabyte_adversarial_input_completes(name):
    """Completes and stays in range (a quadratic parser would stall this file for minutes; the
    timings live in reward_fns/bench.py, never asserted in tests)."""
    response = ADVERSARIAL[name]
    assert len(response) >= 500_000
    result = score(response)
    assert set(result) == KEYS and all(0.0 <= v <= 1.0 for v in result.values())
