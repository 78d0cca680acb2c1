"""The score-file contract: validation errors name the problem and the line."""

from __future__ import annotations

import json

import pytest

from eval.scores import failed_fields, read_scores, validate_score, write_scores

OK = {
    "id": "a",
    "benchmark": "PSR",
    "editor": "flux_kontext",
    "method": "original",
    "evaluator": "GPT-4o",
    "fulfillment": 3,
    "quality": 2,
    "preservation": 2.5,
    "total": 7.5,
    "error": None,
}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"total": 7.0}, "not the sum"),
        ({"quality": 4}, "'quality'=4 outside 0-3"),
        ({"fulfillment": None}, "must be a number"),
        ({"error": "boom"}, "must have null scores"),
        ({"method": ""}, "non-empty string"),
        ({"error": ""}, "non-empty string"),
    ],
)
def test_invalid_rows_are_rejected_with_the_reason(change, needle):
    with pytest.raises(ValueError, match=needle):
        validate_score(OK | change, where="x.jsonl:3")


def test_round_trip_and_failed_rows(tmp_path):
    failed = OK | {"id": "b"} | failed_fields("unreadable answer")
    assert failed["total"] is None and failed["error"] == "unreadable answer"
    path = write_scores(tmp_path / "s.jsonl", [OK, failed | {"reasoning": None}])
    assert read_scores(tmp_path) == [OK, failed | {"reasoning": None}]
    path.write_text(json.dumps(OK) + "\n" + json.dumps({k: v for k, v in OK.items() if k != "editor"}) + "\n")
    with pytest.raises(ValueError, match=r"s.jsonl:2: missing field\(s\) \['editor'\]"):
        read_scores(path)
    with pytest.raises(FileNotFoundError):
        read_scores(tmp_path / "nope.jsonl")
