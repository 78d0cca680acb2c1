"""The rubric-answer parser: known judge styles, range checks, and property tests on adversarial text."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.parsing import CRITERIA, MAX_ANSWER_CHARS, RUBRIC, parse_judge_answer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"fulfillment": 3, "quality": 2, "preservation": 3, "reasoning": "good"}', (3, 2, 3)),
        ('Sure.\n```json\n{"fulfillment": "4", "quality": 2.5, "preservation": 1}\n```', (4, 2.5, 1)),
        ('{"scores": {"request_fulfillment": 3, "image_quality": 2, "content_preservation": 1}}', (3, 2, 1)),
        ('{"fulfillment": {"score": 2, "reason": "x"}, "quality": 1, "preservation": 0}', (2, 1, 0)),
        (
            "1. **Request Fulfillment** (0-4 points): 3/4\n2. **Image Quality** (0-3 points) - 2\n"
            "3. **Preservation**: 3 out of 3\nReasoning: fine",
            (3, 2, 3),
        ),
        (
            "### Request Fulfillment\nScore: 2\n### Image Quality\nScore: 1\n### Preservation\nScore: 0",
            (2, 1, 0),
        ),
        ("fulfilment: 4, quality 3, preservation 3", (4, 3, 3)),
        # the rubric echoed first, the verdict last: the last object with all three criteria wins
        (
            '{"fulfillment": "<0-4>", "quality": "<0-3>"}\nMy answer: {"fulfillment": 1, "quality": 1, "preservation": 2}',
            (1, 1, 2),
        ),
    ],
)
def test_reads_common_answer_styles(answer, expected):
    result = parse_judge_answer(answer)
    assert result.ok, result.error
    got = (result.scores.fulfillment, result.scores.quality, result.scores.preservation)
    assert got == expected
    assert result.scores.total == sum(expected)


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        ('{"fulfillment": 5, "quality": 2, "preservation": 3}', "fulfillment 5 outside"),
        ("Quality: -1\nfulfillment: 2\npreservation: 2", "quality -1 outside"),
        ("Fulfillment: 3/3\nQuality: 2\nPreservation: 2", "out of 3"),
        ('{"fulfillment": 3, "quality": 2', "no value for preservation"),
        ("I cannot evaluate these images.", "no rubric scores"),
        ("", "no rubric scores"),
        (None, "not text"),
    ],
)
def test_unreadable_or_out_of_range_is_a_failure_not_a_zero(answer, needle):
    result = parse_judge_answer(answer)
    assert not result.ok and result.scores is None
    assert needle in result.error


_VALUE = st.one_of(
    st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.none()
)
_FRAGMENTS = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        '"',
        ":",
        ",",
        "\n",
        "fulfillment",
        "Quality",
        "preservation",
        "score:",
        "/4",
        "(0-3)",
        "-",
        "9",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=400), st.lists(_FRAGMENTS, max_size=200).map("".join)))
def test_never_raises_and_any_scores_are_in_range(text):
    result = parse_judge_answer(text)
    assert (result.scores is None) != (result.error is None)
    if result.ok:
        for criterion, top in RUBRIC.items():
            assert 0 <= getattr(result.scores, criterion) <= top


@settings(max_examples=200, deadline=None)
@given(st.fixed_dictionaries({c: _VALUE for c in CRITERIA}), st.text(max_size=50), st.text(max_size=50))
def test_json_answers_in_prose_round_trip_or_fail_cleanly(values, before, after):
    text = before + "\n" + json.dumps(values) + "\n" + after
    result = parse_judge_answer(text)
    plain = all(isinstance(v, int) and not isinstance(v, bool) for v in values.values())
    in_range = plain and all(0 <= values[c] <= RUBRIC[c] for c in CRITERIA)
    if in_range and "{" not in after:
        assert result.ok and result.scores.total == sum(values.values())
    if plain and not in_range and "{" not in after + before:
        assert not result.ok


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "unit",
    [
        "{",
        "[",
        '{"a":',
        "fulfillment " * 3,
        "quality: (0-3) ",
        "1" * 50,
        "\n",
        '"fulfillment": {',
        "{" * 30 + "}",
    ],
)
def test_megabytes_of_adversarial_text_are_cut_and_parsed(unit):
    """Linear time: the answer is cut to MAX_ANSWER_CHARS (head + tail) before any pattern runs,
    and every pattern has bounded repetition. A backtracking blow-up would hang here (timeout guard,
    no timing comparison); the verdict at the end of a huge answer is still read."""
    junk = unit * (4_000_000 // len(unit))
    verdict = '\n{"fulfillment": 2, "quality": 1, "preservation": 3}'
    assert parse_judge_answer(junk).scores is None or parse_judge_answer(junk).ok
    result = parse_judge_answer(junk + verdict)
    assert result.ok and result.scores.total == 6
    assert len(junk) > 100 * MAX_ANSWER_CHARS


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.lists(
            st.sampled_from(
                ['{"verdicts": [', "{", "}", "]", '"verdict": ', '"yes"', "partly", "no", "1.", "\n", ","]
            ),
            max_size=120,
        ).map("".join),
    ),
    st.integers(1, 6),
)
def test_verifier_parser_never_raises_and_is_all_or_nothing(text, count):
    from eval.verifier import parse_verifier_answer

    principles = [f"p{i}" for i in range(count)]
    verdicts, error = parse_verifier_answer(text, principles)
    assert (verdicts is None) != (error is None)
    if verdicts is not None:
        assert [v.principle for v in verdicts] == principles
        assert all(v.verdict in ("yes", "partly", "no") for v in verdicts)
