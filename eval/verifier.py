"""A principle-wise verifier after Edit-R1's Edit-RRM (../shared/papers/edit-r1-verifier-abstract.md).

Instead of one overall score, the request is split into principles, the VLM checks the edited
image against each with a short reasoning and a verdict (yes / partly / no), and the verdicts are
aggregated into an interpretable score:

* instruction principles: the plan's sub-requests (the sequencing agent's output is exactly a list
  of checkable requirements), else one per decomposition subject, else the whole request;
* `PRESERVATION_PRINCIPLE` and `QUALITY_PRINCIPLE`, always last.

Aggregate on the paper's rubric scale so a verifier can stand beside the rubric judges in the
same tables: fulfillment = 4 x mean(instruction verdicts), preservation = 3 x verdict,
quality = 3 x verdict, total = their sum (0-10); the reward is total / 10 (see `VerifierReward`).
A verdict missing for any principle makes the whole answer unreadable (retried, then a failure).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from eval.judge import BackendScorer, ask_with_retries
from eval.parsing import MAX_ANSWER_CHARS, MAX_JSON_ATTEMPTS, RUBRIC
from eval.scores import failed_fields
from inference.chat import Conversation
from inference.prompts import user_message, verifier_prompt
from inference.protocol import Decomposition
from reward_fns.components import SCORE_KEY

PRESERVATION_PRINCIPLE = (
    "Everything the request does not ask to change is preserved as in the original image."
)
QUALITY_PRINCIPLE = "The edited image is coherent and natural, without artifacts or distortions."
#: Verdict words and their value; "partial(ly)" and "true/false" are accepted spellings.
VERDICT_VALUES: dict[str, float] = {"yes": 1.0, "partly": 0.5, "no": 0.0}
_VERDICT_ALIASES = {"partial": "partly", "partially": "partly", "true": "yes", "false": "no"}
_VERDICT_WORD = r"(?P<verdict>yes|no|partly|partially|partial|true|false)"
_LINE_VERDICT = re.compile(
    r"^\W{0,10}(?:principle\s{0,3})?(?P<index>\d{1,3})\s{0,3}[.):\]-]?[^\n]{0,300}?\b"
    + _VERDICT_WORD
    + r"\b",
    re.IGNORECASE,
)


def principles_for(
    request: str,
    plan: Sequence[str] | None = None,
    decomposition: Decomposition | Mapping[str, Any] | None = None,
) -> list[str]:
    """Principles of one request: its instruction principles, then preservation and quality."""
    instruction = [s.strip() for s in plan or () if isinstance(s, str) and s.strip()]
    if not instruction and decomposition is not None:
        if isinstance(decomposition, Mapping):
            decomposition = Decomposition.from_ground_truth(decomposition)
        actions = " / ".join(decomposition.actions) or "edit"
        goals = "; ".join(decomposition.goals)
        instruction = [
            f"The {subject} is changed as requested ({actions}" + (f"; goal: {goals})" if goals else ")")
            for subject in decomposition.subjects
            if subject.strip()
        ]
    if not instruction:
        instruction = [f"The edit does what the request asks: {request.strip()}"]
    return [*instruction, PRESERVATION_PRINCIPLE, QUALITY_PRINCIPLE]


@dataclass(frozen=True)
class Verdict:
    principle: str
    verdict: str
    reasoning: str = ""

    @property
    def value(self) -> float:
        return VERDICT_VALUES[self.verdict]


@dataclass
class Verification:
    """Per-principle verdicts and their aggregate, or the error of the last attempt."""

    principles: list[str]
    verdicts: list[Verdict] | None = None
    error: str | None = None
    answers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdicts is not None

    def aggregate(self) -> dict[str, float] | None:
        """fulfillment / quality / preservation / total on the rubric scale (None on failure)."""
        if self.verdicts is None:
            return None
        *instruction, preservation, quality = self.verdicts
        fulfillment = RUBRIC["fulfillment"] * sum(v.value for v in instruction) / len(instruction)
        out = {
            "fulfillment": fulfillment,
            "quality": RUBRIC["quality"] * quality.value,
            "preservation": RUBRIC["preservation"] * preservation.value,
        }
        out["total"] = out["fulfillment"] + out["quality"] + out["preservation"]
        return out

    def score_fields(self) -> dict[str, Any]:
        agg = self.aggregate()
        if agg is None:
            return failed_fields(self.error or "unknown error")
        return agg | {"error": None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "principles": self.principles,
            "verdicts": None if self.verdicts is None else [dataclasses.asdict(v) for v in self.verdicts],
            "aggregate": self.aggregate(),
            "error": self.error,
        }


def _normalise_verdict(word: Any) -> str | None:
    if not isinstance(word, str):
        return None
    w = word.strip().strip("\"'.").lower()
    w = _VERDICT_ALIASES.get(w, w)
    return w if w in VERDICT_VALUES else None


def _verdicts_from_json(text: str, count: int) -> dict[int, tuple[str, str]] | None:
    starts = [m.start() for m in re.finditer(r"\{", text)]
    if len(starts) > MAX_JSON_ATTEMPTS:
        starts = starts[: MAX_JSON_ATTEMPTS // 2] + starts[-(MAX_JSON_ATTEMPTS // 2) :]
    decoder = json.JSONDecoder()
    best = None
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):
            continue
        entries = obj.get("verdicts") if isinstance(obj, dict) else None
        if not isinstance(entries, list):
            continue
        found: dict[int, tuple[str, str]] = {}
        for position, entry in enumerate(entries[: count + 8], start=1):
            if not isinstance(entry, dict):
                continue
            index = entry.get("principle", position)
            index = index if isinstance(index, int) and not isinstance(index, bool) else position
            verdict = _normalise_verdict(entry.get("verdict"))
            if verdict is not None and 1 <= index <= count:
                reasoning = entry.get("reasoning") or entry.get("reason") or ""
                found[index] = (verdict, str(reasoning)[:500])
        if found:
            best = found  # the last complete-looking object wins, as with the rubric judge
    return best


def _verdicts_from_lines(text: str, count: int) -> dict[int, tuple[str, str]]:
    found: dict[int, tuple[str, str]] = {}
    for line in text.split("\n"):
        match = _LINE_VERDICT.match(line[:500])
        if match is None:
            continue
        index = int(match.group("index"))
        verdict = _normalise_verdict(match.group("verdict"))
        if verdict is not None and 1 <= index <= count:
            found[index] = (verdict, line[match.end() :].strip(" -:—.")[:500])
    return found


def parse_verifier_answer(text: Any, principles: Sequence[str]) -> tuple[list[Verdict] | None, str | None]:
    """Verdicts for every principle (JSON answer, else numbered lines), or None and the reason. Never raises."""
    if not isinstance(text, str):
        return None, f"answer is {type(text).__name__}, not text"
    if len(text) > MAX_ANSWER_CHARS:
        text = text[: MAX_ANSWER_CHARS // 2] + "\n" + text[-MAX_ANSWER_CHARS // 2 :]
    count = len(principles)
    found = _verdicts_from_json(text, count) or _verdicts_from_lines(text, count)
    missing = [i for i in range(1, count + 1) if i not in found]
    if missing:
        return None, f"no verdict for principle(s) {missing} of {count}: {text[:120]!r}"
    return [Verdict(principles[i - 1], *found[i]) for i in range(1, count + 1)], None


@dataclass(frozen=True)
class VerifyItem:
    request: str
    original: Image.Image
    edited: Image.Image
    principles: tuple[str, ...]


def verifier_conversation(
    request: str, principles: Sequence[str], original: Image.Image, edited: Image.Image
) -> Conversation:
    return user_message(verifier_prompt(request, principles), [original, edited])


class PrincipleVerifier(BackendScorer):
    """Checks an edit principle by principle with a chat backend; batched, retried, never zero-filled."""

    def prompt(self, request: str, principles: Sequence[str]) -> str:
        return verifier_prompt(request, principles)

    def verify(
        self,
        request: str,
        original: Image.Image,
        edited: Image.Image,
        principles: Sequence[str] | None = None,
    ) -> Verification:
        principles = tuple(principles or principles_for(request))
        return self.verify_many([VerifyItem(request, original, edited, principles)])[0]

    def verify_many(self, items: Sequence[VerifyItem]) -> list[Verification]:
        """One batched backend call per attempt; only unresolved items are asked again."""
        conversations = [verifier_conversation(i.request, i.principles, i.original, i.edited) for i in items]
        outcomes = ask_with_retries(
            self.backend,
            conversations,
            self.sampling,
            self.retries,
            lambda index, text: parse_verifier_answer(text, items[index].principles),
        )
        return [
            Verification(list(i.principles), o.value, o.error, o.answers)
            for i, o in zip(items, outcomes, strict=True)
        ]


class VerifierReward:
    """The verifier as a reward: `reward(requests, originals, edited, plans=None)` -> reward dicts.

    Each dict has `score` (total / 10, in [0, 1]) plus `fulfillment`, `quality`, `preservation`
    (each in [0, 1]) and `error`. A failed verification gets `failure_score` (None by default, so
    a trainer must decide explicitly what an unverifiable edit is worth).
    """

    def __init__(self, verifier: PrincipleVerifier, failure_score: float | None = None):
        self.verifier = verifier
        self.failure_score = failure_score

    def __call__(
        self,
        requests: Sequence[str],
        originals: Sequence[Image.Image],
        edited: Sequence[Image.Image],
        plans: Sequence[Sequence[str] | None] | None = None,
    ) -> list[dict[str, Any]]:
        if not len(requests) == len(originals) == len(edited):
            raise ValueError(
                f"requests, originals and edited differ in length: {len(requests)}, {len(originals)}, {len(edited)}"
            )
        plans = plans if plans is not None else [None] * len(requests)
        items = [
            VerifyItem(r, o, e, tuple(principles_for(r, plan=p)))
            for r, o, e, p in zip(requests, originals, edited, plans, strict=True)
        ]
        rewards = []
        for result in self.verifier.verify_many(items):
            agg = result.aggregate()
            if agg is None:
                rewards.append(
                    {SCORE_KEY: self.failure_score} | dict.fromkeys(RUBRIC) | {"error": result.error}
                )
                continue
            rewards.append(
                {SCORE_KEY: agg["total"] / sum(RUBRIC.values())}
                | {c: agg[c] / RUBRIC[c] for c in RUBRIC}
                | {"error": None}
            )
        return rewards
