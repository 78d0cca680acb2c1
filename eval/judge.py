"""The paper's VLM-as-judge (Table 2): original image first, edited second, then the request.

Works over any `inference.chat.ChatBackend` (OpenAI-compatible HTTP for GPT-4o /
Gemini-2.5-Flash, vLLM or transformers for open VLMs). An answer that cannot be read, or a
backend error, is retried; when the retries run out the judgement is a failure with its reason,
never a zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from PIL import Image

from eval.parsing import RubricScores, parse_judge_answer
from eval.scores import failed_fields
from inference.chat import ChatBackend, Conversation, Sampling
from inference.prompts import judge_prompt, user_message

#: Greedy first; retries sample, else a deterministic judge repeats its unreadable answer.
DEFAULT_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=512, n=1, seed=0)
RETRY_TEMPERATURE = 0.7
T = TypeVar("T")


@dataclass(frozen=True)
class JudgeItem:
    """What one judgement needs: the request, the original image, the edited image."""

    request: str
    original: Image.Image
    edited: Image.Image


@dataclass
class Judgement:
    """Result of judging one item: scores, or the error of its last attempt."""

    scores: RubricScores | None
    error: str | None
    answers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.scores is not None

    def score_fields(self) -> dict[str, Any]:
        """The score-file fields: rubric values and total, or nulls and the error."""
        if self.scores is None:
            return failed_fields(self.error or "unknown error")
        d = self.scores.to_dict()
        return {k: d[k] for k in ("fulfillment", "quality", "preservation", "total")} | {"error": None}


def judge_conversation(request: str, original: Image.Image, edited: Image.Image) -> Conversation:
    """Table 2's prompt with the ORIGINAL image first and the EDITED image second."""
    return user_message(judge_prompt(request), [original, edited])


def retry_sampling(base: Sampling, attempt: int) -> Sampling:
    """Sampling for attempt `attempt` (0 = first): a new seed, and sampling instead of greedy."""
    if attempt == 0:
        return base
    seed = None if base.seed is None else base.seed + attempt
    return dataclasses.replace(base, temperature=max(base.temperature, RETRY_TEMPERATURE), seed=seed, n=1)


@dataclass
class Outcome(Generic[T]):
    """What asking one conversation came to: a parsed value, or the error of the last attempt."""

    value: T | None = None
    error: str | None = "not asked"
    answers: list[str] = field(default_factory=list)


def ask_with_retries(
    backend: ChatBackend,
    conversations: Sequence[Conversation],
    sampling: Sampling,
    retries: int,
    parse: Callable[[int, str], tuple[T | None, str | None]],
) -> list[Outcome[T]]:
    """Ask all conversations in one batched call, then re-ask only the items whose own request
    failed or whose answer `parse` (item index, text) rejects, up to `retries` more times each.

    The backend answers per request, so a good answer is never thrown away for another item's
    failure. A failed request is re-sent as it was (it was never answered); an unreadable answer is
    re-asked with `retry_sampling` (a greedy judge would repeat itself). A request the server
    refuses for good (e.g. HTTP 400) is not re-sent.
    """
    outcomes: list[Outcome[T]] = [Outcome() for _ in conversations]
    tries = [0] * len(conversations)
    todo = list(range(len(conversations)))
    while todo:
        # Items that share a sampling (same number of answers so far) share one batched call.
        groups: dict[int, list[int]] = {}
        for i in todo:
            groups.setdefault(len(outcomes[i].answers), []).append(i)
        still = []
        for answered, group in sorted(groups.items()):
            results = backend.chat([conversations[i] for i in group], retry_sampling(sampling, answered))
            if len(results) != len(group):
                raise RuntimeError(f"backend returned {len(results)} results for {len(group)} conversations")
            for i, result in zip(group, results, strict=True):
                tries[i] += 1
                if not result.ok:
                    outcomes[i].error = f"backend error: {result.error}"
                    if result.retryable and tries[i] <= retries:
                        still.append(i)
                    continue
                text = result.texts[0] if result.texts else ""
                outcomes[i].answers.append(text)
                value, error = parse(i, text)
                if value is not None:
                    outcomes[i].value, outcomes[i].error = value, None
                else:
                    outcomes[i].error = f"unreadable answer: {error}"
                    if tries[i] <= retries:
                        still.append(i)
        todo = sorted(still)
    for i, o in enumerate(outcomes):
        if o.value is None:
            o.error = f"{o.error} (after {tries[i]} attempts)"
    return outcomes


class BackendScorer:
    """What the rubric judge and the principle verifier share: a chat backend, one-sample decoding and
    a retry budget."""

    def __init__(self, backend: ChatBackend, sampling: Sampling = DEFAULT_SAMPLING, retries: int = 2):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.backend = backend
        self.sampling = dataclasses.replace(sampling, n=1)
        self.retries = retries

    @property
    def model_id(self) -> str:
        return getattr(self.backend, "model_id", "unknown")


class RubricJudge(BackendScorer):
    """Scores edits on the paper's rubric with a chat backend; batches, retries, never zero-fills."""

    def prompt(self, request: str) -> str:
        return judge_prompt(request)

    def judge(self, request: str, original: Image.Image, edited: Image.Image) -> Judgement:
        return self.judge_many([JudgeItem(request, original, edited)])[0]

    def judge_many(self, items: Sequence[JudgeItem]) -> list[Judgement]:
        """One batched backend call per attempt; only unresolved items are asked again."""
        conversations = [judge_conversation(i.request, i.original, i.edited) for i in items]

        def parse(_: int, text: str) -> tuple[RubricScores | None, str | None]:
            parsed = parse_judge_answer(text)
            return parsed.scores, parsed.error

        outcomes = ask_with_retries(self.backend, conversations, self.sampling, self.retries, parse)
        return [Judgement(o.value, o.error, o.answers) for o in outcomes]
