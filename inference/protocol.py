"""The one edit protocol: decomposition/plan data types, their text format, and the parse of a
model's answer. Every stage (data_prep, reward_fns, inference, eval) imports these; no copy elsewhere.

Wire format of the decomposition agent (lists are JSON arrays of strings)::

    <think>free text</think>
    <action>["recolor"]</action>
    <subjects>["coat", "hair"]</subjects>
    <goals>["scarlet red"]</goals>

All parsers here are linear in the input and never raise on model output: a model can answer
anything, including megabytes of unclosed tags.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

THINK, ACTION, SUBJECTS, GOALS = "think", "action", "subjects", "goals"
#: Tags of the decomposition answer, in the order they must appear.
DECOMPOSITION_TAGS: tuple[str, ...] = (THINK, ACTION, SUBJECTS, GOALS)
#: Tag of the sequencing agent's answer (a JSON array of sub-requests).
STEPS = "steps"
#: The eight tag strings no tag content may contain (format rule of the reward).
ALL_TAG_STRINGS: tuple[str, ...] = tuple(s for t in DECOMPOSITION_TAGS for s in (f"<{t}>", f"</{t}>"))
#: Ground-truth JSON keys, one per list field of a decomposition.
GROUND_TRUTH_KEYS: tuple[str, ...] = ("actions", "subjects", "goals")
#: Which tag carries which ground-truth field.
TAG_OF_FIELD: dict[str, str] = {"actions": ACTION, "subjects": SUBJECTS, "goals": GOALS}

#: Suggested action vocabulary (shown in the decomposition prompt; the synthetic set uses a subset).
ACTION_VOCABULARY: tuple[str, ...] = (
    "recolor",
    "remove",
    "add",
    "replace",
    "move",
    "resize",
    "brighten",
    "darken",
    "blur background",
    "restyle",
    "enhance",
    "restore",
    "crop",
    "rotate",
    "change text",
)

_WHITESPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class Decomposition:
    """Structured reading of one edit request (paper eq. 1): actions, subjects, goals."""

    actions: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    goals: tuple[str, ...] = ()
    think: str = ""

    def to_ground_truth(self) -> dict[str, list[str]]:
        """The JSON object stored as `reward_model.ground_truth` (without the reasoning)."""
        return {"actions": list(self.actions), "subjects": list(self.subjects), "goals": list(self.goals)}

    def to_json(self) -> str:
        return json.dumps(self.to_ground_truth(), ensure_ascii=False)

    @classmethod
    def from_ground_truth(cls, value: str | Mapping[str, Any], think: str = "") -> Decomposition:
        """Validate a ground truth (JSON text or mapping); raise ValueError naming what is wrong."""
        obj = value
        if isinstance(value, (str, bytes)):
            try:
                obj = json.loads(value)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(
                    f"ground truth is not valid JSON ({exc.msg}): {str(value)[:200]!r}"
                ) from None
        if not isinstance(obj, Mapping):
            raise ValueError(
                f"ground truth must be a JSON object, got {type(obj).__name__}: {str(value)[:200]!r}"
            )
        lists = {}
        for key in GROUND_TRUTH_KEYS:
            if key not in obj:
                raise ValueError(f"ground truth lacks key {key!r} (has {sorted(obj)}): {str(value)[:200]!r}")
            items = obj[key]
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise ValueError(f"ground truth key {key!r} must be a list of strings, got {items!r:.200}")
            lists[key] = tuple(items)
        return cls(think=think, **lists)


@dataclass(frozen=True)
class EditPlan:
    """Ordered sub-requests (paper eq. 2), the sequencing agent's output."""

    sub_requests: tuple[str, ...] = ()
    think: str = ""


@dataclass(frozen=True)
class ParsedDecomposition:
    """What could be read from a model's answer. Lists are None where the tag pair is missing."""

    raw: str
    format_ok: bool
    think: str | None = None
    fields: dict[str, tuple[str, ...] | None] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every list field was found (possibly empty)."""
        return all(self.fields.get(k) is not None for k in GROUND_TRUTH_KEYS)

    def to_decomposition(self) -> Decomposition | None:
        if not self.complete:
            return None
        return Decomposition(
            actions=self.fields["actions"],
            subjects=self.fields["subjects"],
            goals=self.fields["goals"],
            think=self.think or "",
        )


def render_decomposition(d: Decomposition) -> str:
    """The exact answer text the decomposition agent is trained to produce."""
    dump = lambda xs: json.dumps(list(xs), ensure_ascii=False)  # noqa: E731
    return (
        f"<{THINK}>{d.think}</{THINK}>\n<{ACTION}>{dump(d.actions)}</{ACTION}>\n"
        f"<{SUBJECTS}>{dump(d.subjects)}</{SUBJECTS}>\n<{GOALS}>{dump(d.goals)}</{GOALS}>"
    )


def json_array(text: str) -> list[Any] | None:
    """The parsed array if `text` is a JSON array, else None. Never raises."""
    stripped = text.strip()
    if not stripped.startswith("["):
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def parse_items(content: str) -> tuple[str, ...]:
    """Items of one tag's content: a JSON array's string elements, else split on , ; and newlines."""
    array = json_array(content)
    if array is not None:
        return tuple(x for x in array if isinstance(x, str))
    # str.replace + split: several times faster than re.split on megabytes of separators
    return tuple(content.replace(";", ",").replace("\n", ",").split(","))


def tag_content(text: str, tag: str, start: int = 0) -> str | None:
    """Text between the first `<tag>` at or after `start` and the first `</tag>` after it."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    i = text.find(open_tag, start)
    if i < 0:
        return None
    j = text.find(close_tag, i + len(open_tag))
    if j < 0:
        return None
    return text[i + len(open_tag) : j]


def answer_region_start(text: str) -> int:
    """Index after the first `</think>`, or 0: tags are read from there so reasoning can't spoof them."""
    k = text.find(f"</{THINK}>")
    return 0 if k < 0 else k + len(f"</{THINK}>")


def _scan_tag(s: str, pos: int, tag: str) -> int | None:
    """Position after `<tag>content</tag>` starting at `pos` (leading whitespace allowed), or None when
    the pair is missing, its content holds any of the eight tags, or a list isn't a JSON string array."""
    open_tag, close_tag = f"<{tag}>", f"</{tag}>"
    pos = _WHITESPACE.match(s, pos).end()
    if not s.startswith(open_tag, pos):
        return None
    body_start = pos + len(open_tag)
    end = s.find(close_tag, body_start)
    if end < 0:
        return None
    body = s[body_start:end]
    if any(t in body for t in ALL_TAG_STRINGS):
        return None
    if tag != THINK:
        array = json_array(body)
        if array is None or not all(isinstance(x, str) for x in array):
            return None
    return end + len(close_tag)


def _answer_part_ok(rest: str) -> bool:
    """The action, subjects and goals pairs in order, then nothing but whitespace."""
    pos: int | None = 0
    for tag in DECOMPOSITION_TAGS[1:]:
        pos = _scan_tag(rest, pos, tag)
        if pos is None:
            return False
    return _WHITESPACE.match(rest, pos).end() == len(rest)


def check_format(text: str) -> bool:
    """Strict format: exactly the four tag pairs in order, whitespace between, nothing around;
    no content holds any of the eight tags; action/subjects/goals are JSON arrays of strings."""
    s = text.strip()
    pos = _scan_tag(s, 0, THINK)
    if pos is None:
        return False
    return _answer_part_ok(s[pos:])


def parse_decomposition(text: str) -> ParsedDecomposition:
    """Read a decomposition answer leniently (content) and strictly (format). Never raises."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    start = answer_region_start(text)
    think = tag_content(text, THINK) if start else None
    fields: dict[str, tuple[str, ...] | None] = {}
    for key, tag in TAG_OF_FIELD.items():
        content = tag_content(text, tag, start)
        fields[key] = None if content is None else parse_items(content)
    return ParsedDecomposition(raw=text, format_ok=check_format(text), think=think, fields=fields)


def render_plan(plan: EditPlan) -> str:
    """The sequencing agent's answer text."""
    steps = json.dumps(list(plan.sub_requests), ensure_ascii=False)
    return f"<{THINK}>{plan.think}</{THINK}>\n<{STEPS}>{steps}</{STEPS}>"


_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s+")


def parse_plan(text: str) -> EditPlan | None:
    """Read a sequencing answer: a `<steps>` JSON array, else numbered/bulleted lines. Never raises.
    Returns None when no non-empty sub-request can be read."""
    if not isinstance(text, str):
        return None
    start = answer_region_start(text)
    think = tag_content(text, THINK) if start else ""
    content = tag_content(text, STEPS, start)
    if content is not None:
        items = parse_items(content)
    else:
        lines = text[start:].splitlines()
        items = tuple(_NUMBERED.sub("", ln) for ln in lines if _NUMBERED.match(ln))
    steps = tuple(s.strip() for s in items if s.strip())
    return EditPlan(sub_requests=steps, think=think or "") if steps else None


def single_turn_instruction(plan: EditPlan) -> str:
    """All sub-requests as one editor instruction (the paper's best, single-turn mode)."""
    steps = [s.rstrip(". ") for s in plan.sub_requests]
    if len(steps) == 1:
        return steps[0] + "."
    return " ".join(f"{i}. {s}." for i, s in enumerate(steps, 1))
