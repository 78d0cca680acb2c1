"""Reading a judge's free-text answer into rubric scores (paper Table 2), never raising.

Judges answer in many shapes: the JSON object the prompt asks for (bare, fenced, wrapped in
prose, with string numbers), or labelled lines ("**Request Fulfillment**: 3/4",
"Quality (0-3 points) - 2", "### Preservation" then "Score: 3"). A JSON object with all three
criteria wins (the last such object, models reason before they conclude); otherwise the last
labelled value of each criterion. Values outside the rubric's range are a failure, not a clamp.

Linear time: answers are cut to `MAX_ANSWER_CHARS`, JSON decoding is tried at a bounded number
of positions, and the line patterns have bounded gaps.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

#: The rubric: criterion -> maximum points (minimum 0). Total is their sum, 0-10.
RUBRIC: dict[str, int] = {"fulfillment": 4, "quality": 3, "preservation": 3}
CRITERIA: tuple[str, ...] = tuple(RUBRIC)
MAX_TOTAL: int = sum(RUBRIC.values())
#: Longer answers keep their head and tail (where the verdict is); the middle is reasoning.
MAX_ANSWER_CHARS = 32_768
#: How many '{' positions JSON decoding is tried at (the last ones, then the first ones).
MAX_JSON_ATTEMPTS = 8

_NUMBER = r"[-+]?\d{1,6}(?:\.\d{1,6})?"
# Criterion names as judges write them: "Request Fulfillment", "fulfilment", "Image Quality", ...
_LABELS = {
    "fulfillment": r"(?:request[\s_-]{0,3})?fulfil{1,2}ment",
    "quality": r"(?:image[\s_-]{0,3}|visual[\s_-]{0,3})?quality",
    "preservation": r"(?:content[\s_-]{0,3})?preservation",
}
_LABEL_RE = re.compile(
    r"(?P<label>" + "|".join(f"(?P<{k}>{v})" for k, v in _LABELS.items()) + r")", re.IGNORECASE
)
# The rubric's own range text after a label, e.g. "(0-4 points)", "[0–3]", "(out of 4)".
_RANGE_TEXT = re.compile(
    r"[(\[]\s{0,3}(?:\d\s{0,3}(?:-|–|to)\s{0,3}\d|out\s{1,3}of\s{1,3}\d)[^)\]\n]{0,20}[)\]]", re.IGNORECASE
)
# After a label: up to 40 non-digit separator characters, then the value, maybe "/ max".
# A minus sign touching the digit is a (negative, out-of-range) value; "Quality - 2" is a separator.
_VALUE_AFTER_LABEL = re.compile(
    r"^[^\d\n]{0,40}?(?P<value>-?\d{1,6}(?:\.\d{1,6})?)(?:\s{0,3}(?:/|out\s{1,3}of)\s{0,3}(?P<max>\d{1,3}))?",
    re.IGNORECASE,
)
_SCORE_LINE = re.compile(
    r"^\W{0,10}(?:score|points?|rating)\W{0,10}(?P<value>"
    + _NUMBER
    + r")(?:\s{0,3}/\s{0,3}(?P<max>\d{1,3}))?",
    re.IGNORECASE,
)
_REASONING_RE = re.compile(
    r"(?:reasoning|explanation|rationale)\W{0,10}(?P<text>[^\n]{1,500})", re.IGNORECASE
)


@dataclass(frozen=True)
class RubricScores:
    """One successful judgement on the paper's 0-10 rubric."""

    fulfillment: float
    quality: float
    preservation: float
    reasoning: str = ""

    @property
    def total(self) -> float:
        return self.fulfillment + self.quality + self.preservation

    def to_dict(self) -> dict[str, Any]:
        return {
            "fulfillment": self.fulfillment,
            "quality": self.quality,
            "preservation": self.preservation,
            "total": self.total,
            "reasoning": self.reasoning,
        }


@dataclass(frozen=True)
class ParseResult:
    """Scores, or the reason none could be read (never both)."""

    scores: RubricScores | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.scores is not None


def _shorten(text: str) -> str:
    if len(text) <= MAX_ANSWER_CHARS:
        return text
    half = MAX_ANSWER_CHARS // 2
    return text[:half] + "\n" + text[-half:]


def _as_number(value: Any) -> float | None:
    """A finite float from a JSON value: 3, 3.0, "3", "3/4", "3 points"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        match = re.match(r"\s{0,10}(" + _NUMBER + r")", value[:64])
        if match:
            return float(match.group(1))
    return None


def _criterion_of_key(key: str) -> str | None:
    match = _LABEL_RE.search(key[:80])
    if match is None:
        return None
    return next(c for c in CRITERIA if match.group(c))


def _from_json_object(obj: Any) -> tuple[dict[str, float], str] | None:
    """Criterion values of a decoded JSON object (keys matched leniently; one level of nesting)."""
    if not isinstance(obj, dict):
        return None
    values: dict[str, float] = {}
    reasoning = ""
    stack = [obj]
    for depth in range(2):
        nested = []
        for current in stack:
            for key, value in list(current.items())[:64]:
                if not isinstance(key, str):
                    continue
                if isinstance(value, dict) and depth == 0:
                    # {"fulfillment": {"score": 3, "reason": ...}} or {"scores": {...}}
                    criterion = _criterion_of_key(key)
                    inner = next((value[k] for k in ("score", "value", "points") if k in value), None)
                    if criterion and _as_number(inner) is not None:
                        values.setdefault(criterion, _as_number(inner))
                    else:
                        nested.append(value)
                    continue
                if key.lower() in ("reasoning", "reason", "explanation", "rationale") and isinstance(
                    value, str
                ):
                    reasoning = value
                    continue
                criterion = _criterion_of_key(key)
                number = _as_number(value)
                if criterion and number is not None:
                    values.setdefault(criterion, number)
        stack = nested
    return (values, reasoning) if values else None


def _json_candidates(text: str) -> list[tuple[dict[str, float], str]]:
    """Decoded criterion values of JSON objects in the text, in text order."""
    starts = [m.start() for m in re.finditer(r"\{", text)]
    if len(starts) > MAX_JSON_ATTEMPTS:
        tail = starts[-(MAX_JSON_ATTEMPTS // 2) :]
        starts = starts[: MAX_JSON_ATTEMPTS - len(tail)] + tail
    decoder = json.JSONDecoder()
    found = []
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        got = _from_json_object(obj)
        if got:
            found.append(got)
    return found


def _from_lines(text: str) -> tuple[dict[str, float], dict[str, float], str]:
    """Last labelled value per criterion, plus any stated maxima ("3/4") and a reasoning line."""
    values: dict[str, float] = {}
    maxima: dict[str, float] = {}
    pending: str | None = None  # a label line without a value: look at the next line
    for line in text.split("\n"):
        line = line[:400]
        if not line.strip():
            continue
        labels = list(_LABEL_RE.finditer(line))
        if labels:
            pending = None
            for label, following in zip(labels, [*labels[1:], None], strict=True):
                criterion = next(c for c in CRITERIA if label.group(c))
                segment = line[label.end() : following.start() if following else len(line)]
                match = _VALUE_AFTER_LABEL.match(_RANGE_TEXT.sub(" ", segment, count=2))
                if match:
                    values[criterion] = float(match.group("value"))
                    if match.group("max"):
                        maxima[criterion] = float(match.group("max"))
                else:
                    pending = criterion  # "### Preservation" then "Score: 3" on the next line
            continue
        if pending is not None:
            match = _SCORE_LINE.match(line)
            if match:
                values[pending] = float(match.group("value"))
                if match.group("max"):
                    maxima[pending] = float(match.group("max"))
            pending = None
    reasoning = _REASONING_RE.search(text)
    return values, maxima, (reasoning.group("text").strip().strip('"') if reasoning else "")


def _check(values: dict[str, float], maxima: dict[str, float], reasoning: str) -> ParseResult:
    missing = [c for c in CRITERIA if c not in values]
    if missing:
        return ParseResult(None, f"no value for {', '.join(missing)}")
    for criterion, top in RUBRIC.items():
        value = values[criterion]
        stated = maxima.get(criterion)
        if stated is not None and stated != top:
            return ParseResult(None, f"{criterion} given out of {stated:g}, the rubric's maximum is {top}")
        if not 0 <= value <= top:
            return ParseResult(None, f"{criterion} {value:g} outside the rubric's range 0-{top}")
    return ParseResult(RubricScores(reasoning=reasoning[:1000], **{c: values[c] for c in CRITERIA}))


def parse_judge_answer(text: Any) -> ParseResult:
    """Rubric scores from a judge's answer, or a ParseResult whose error says why not."""
    if not isinstance(text, str):
        return ParseResult(None, f"answer is {type(text).__name__}, not text")
    text = _shorten(text)
    complete = [c for c in _json_candidates(text) if all(k in c[0] for k in CRITERIA)]
    if complete:
        values, reasoning = complete[-1]
        return _check(values, {}, reasoning)
    values, maxima, reasoning = _from_lines(text)
    if not values:
        return ParseResult(None, f"no rubric scores found in answer: {text[:120]!r}")
    return _check(values, maxima, reasoning)
