"""The shared edit protocol: round trips, strict format, lenient content, linear time."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference import prompts
from inference.protocol import (
    ALL_TAG_STRINGS,
    Decomposition,
    EditPlan,
    check_format,
    parse_decomposition,
    parse_items,
    parse_plan,
    render_decomposition,
    render_plan,
    single_turn_instruction,
)

item = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20).filter(
    lambda s: not any(t in s for t in ALL_TAG_STRINGS)
)
items = st.lists(item, max_size=5).map(tuple)
think = st.text(max_size=50).filter(lambda s: not any(t in s for t in ALL_TAG_STRINGS))


@given(items, items, items, think)
def test_render_parse_round_trip(actions, subjects, goals, reasoning):
    d = Decomposition(actions, subjects, goals, think=reasoning)
    parsed = parse_decomposition(render_decomposition(d))
    assert parsed.format_ok
    assert parsed.to_decomposition() == d


def test_example_from_paper():
    text = (
        '<think>coat and hair</think><action>["Recoloring"]</action>'
        '<subjects>["coat", "hair"]</subjects><goals>["scarlet or copper red"]</goals>'
    )
    p = parse_decomposition(text)
    assert p.format_ok and p.fields["subjects"] == ("coat", "hair")


@pytest.mark.parametrize(
    "text",
    [
        '<action>["a"]</action><subjects>[]</subjects><goals>[]</goals>',  # no think
        'x<think></think><action>["a"]</action><subjects>[]</subjects><goals>[]</goals>',  # text before
        '<think></think><action>["a"]</action><subjects>[]</subjects><goals>[]</goals>.',  # text after
        '<think></think><subjects>[]</subjects><action>["a"]</action><goals>[]</goals>',  # order
        "<think></think><action>a, b</action><subjects>[]</subjects><goals>[]</goals>",  # not JSON
        "<think></think><action>[1]</action><subjects>[]</subjects><goals>[]</goals>",  # not strings
        "<think><goals></think><action>[]</action><subjects>[]</subjects><goals>[]</goals>",  # tag inside
        "<think></think>x<action>[]</action><subjects>[]</subjects><goals>[]</goals>",  # junk between
    ],
)
def test_format_rejects(text):
    assert not check_format(text)


def test_format_accepts_whitespace_and_empty():
    assert check_format(
        "  <think></think>\n <action>[]</action>\t<subjects>[]</subjects>\n<goals>[]</goals>\n"
    )


def test_content_is_read_after_think_only():
    text = '<think><action>["fake"]</action></think> <action>["real"]</action>'
    assert parse_decomposition(text).fields["actions"] == ("real",)
    assert parse_decomposition(text).fields["goals"] is None


def test_items_fallback_split():
    assert parse_items("a, b;c\nd") == ("a", " b", "c", "d")
    assert parse_items('["x", 3, "y"]') == ("x", "y")


def test_ground_truth_validation_names_the_problem():
    with pytest.raises(ValueError, match="not valid JSON"):
        Decomposition.from_ground_truth("{oops")
    with pytest.raises(ValueError, match="lacks key 'goals'"):
        Decomposition.from_ground_truth({"actions": [], "subjects": []})
    with pytest.raises(ValueError, match="list of strings"):
        Decomposition.from_ground_truth({"actions": "x", "subjects": [], "goals": []})
    d = Decomposition.from_ground_truth(json.dumps({"actions": ["a"], "subjects": [], "goals": ["g"]}))
    assert d.actions == ("a",) and d.goals == ("g",)


@given(st.text(max_size=2000))
@settings(max_examples=300)
def test_parsers_never_raise(text):
    parse_decomposition(text)
    parse_plan(text)
    check_format(text)


@given(
    st.lists(
        st.sampled_from(list(ALL_TAG_STRINGS) + ["[", "]", '"', "x", " ", "\n", ",", "<steps>"]), max_size=300
    )
)
def test_parsers_never_raise_on_tag_soup(tokens):
    text = "".join(tokens)
    parse_decomposition(text)
    parse_plan(text)


@pytest.mark.parametrize(
    "unit",
    ["<think>", "<action>", "<action>[", "</think><action>", "<goals>" * 3 + "[", '["', "a" * 7, "<steps>["],
)
def test_parse_completes_on_megabyte_floods(unit):
    """Linear: ~10 ms each; a quadratic scan would stall this file for minutes (timings are the
    benches', never asserted in tests)."""
    text = unit * (1_000_000 // len(unit))
    parse_decomposition(text)
    parse_plan(text)
    assert check_format(text) is False


def test_plan_round_trip_and_fallback():
    plan = EditPlan(("Recolor the coat to scarlet", "Recolor the hair to copper red"), think="two")
    assert parse_plan(render_plan(plan)) == plan
    assert parse_plan("1. first\n2) second\n- third").sub_requests == ("first", "second", "third")
    assert parse_plan("nothing here") is None
    assert (
        single_turn_instruction(plan) == "1. Recolor the coat to scarlet. 2. Recolor the hair to copper red."
    )


def test_prompts_render_with_request():
    d = Decomposition(("recolor",), ("coat",), ("red",))
    assert '"make it red"' in prompts.decomposition_prompt("make it red")
    assert '["coat"]' in prompts.sequencing_prompt("make it red", d)
    judge = prompts.judge_prompt("make it red")
    assert "Request Fulfillment** (0-4 points)" in judge and "Preservation** (0-3 points)" in judge
