"""The decomposition and sequencing agents (paper Algorithm 1, steps 10 and 12).

Both work on batches (one backend call for the whole batch; the backend answers per request, so
a failed request costs only its own item), keep the raw text next to the parse, and never raise for
one bad item: a failure is returned as that item's `error`. Only failed items are asked again, up
to `max_attempts` in all: a retryable backend error (rate limit, server error, timeout) repeats the
same request, batched with the other failed items; an answer that cannot be parsed is retried
alone with sampling seed `seed + attempt`, so what an item gets does not depend on which other items
share its batch (greedy first attempts are batch-independent too, up to floating-point differences
of padding).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from inference.chat import ChatBackend, ChatResult, Conversation, Sampling
from inference.prompts import decomposition_prompt, sequencing_prompt, user_message
from inference.protocol import Decomposition, EditPlan, parse_decomposition, parse_plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentResult:
    """What an agent produced for one item: the raw answer, its parse (None when unusable), the error."""

    raw: str | None
    parsed: Any
    attempts: int
    format_ok: bool = False
    error: str | None = None


class _RetryingAgent(abc.ABC):
    """Batch call, then bounded per-item retries until `parse(raw)` gives something usable."""

    name = "agent"

    def __init__(
        self,
        backend: ChatBackend,
        sampling: Sampling = Sampling(temperature=0.0, max_new_tokens=512),
        max_attempts: int = 3,
        retry_temperature: float = 0.7,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.backend = backend
        self.sampling = sampling
        self.max_attempts = max_attempts
        self.retry_temperature = retry_temperature

    @abc.abstractmethod
    def parse(self, raw: str) -> tuple[Any, bool]:
        """(usable parse or None, strict format ok)."""

    def _run(self, conversations: Sequence[Conversation], seeds: Sequence[int]) -> list[AgentResult]:
        first = replace(self.sampling, n=1)
        n = len(conversations)
        attempts = [1] * n
        raw: list[str | None] = [None] * n
        parsed: list[Any] = [None] * n
        ok = [False] * n
        error: list[str | None] = [None] * n
        final = [False] * n  # stop asking: parsed, out of attempts, or a non-retryable error

        def take(i: int, result: ChatResult) -> None:
            if not result.ok:
                error[i] = f"{self.name}: backend error: {result.error}"
                final[i] = not result.retryable or attempts[i] >= self.max_attempts
                return
            raw[i] = result.texts[0]
            parsed[i], ok[i] = self.parse(raw[i])
            error[i] = None
            final[i] = parsed[i] is not None or attempts[i] >= self.max_attempts

        for i, result in enumerate(self.backend.chat(conversations, first)):
            take(i, result)
        while not all(final):
            todo = [i for i in range(n) if not final[i]]
            for i in todo:
                attempts[i] += 1
            # Requests that never got an answer are sent again as they were, in one batch; after an
            # unparseable answer an item samples alone with its own seed.
            unanswered = [i for i in todo if raw[i] is None]
            resent = self.backend.chat([conversations[i] for i in unanswered], first)
            for i, result in zip(unanswered, resent, strict=True):
                take(i, result)
            for i in todo:
                if raw[i] is not None and i not in unanswered:
                    retry = self._retry_sampling(seeds[i], attempts[i])
                    take(i, self.backend.chat([conversations[i]], retry)[0])
        results = []
        for i in range(n):
            if parsed[i] is None and error[i] is None:
                error[i] = (
                    f"{self.name}: no parseable answer after {attempts[i]} attempt(s); "
                    f"last answer: {raw[i][:200]!r}"
                )
            results.append(
                AgentResult(
                    raw=raw[i], parsed=parsed[i], attempts=attempts[i], format_ok=ok[i], error=error[i]
                )
            )
        return results

    def _retry_sampling(self, seed: int, attempt: int) -> Sampling:
        temperature = self.sampling.temperature or self.retry_temperature
        return replace(self.sampling, n=1, temperature=temperature, seed=seed + attempt)


class DecompositionAgent(_RetryingAgent):
    """A VLM that reads (image, request) into actions, subjects and goals with the shared prompt."""

    name = "decomposition"

    def parse(self, raw: str) -> tuple[Decomposition | None, bool]:
        parsed = parse_decomposition(raw)
        return parsed.to_decomposition(), parsed.format_ok

    def decompose(
        self, images: Sequence[Any], requests: Sequence[str], seeds: Sequence[int]
    ) -> list[AgentResult]:
        convs = [user_message(decomposition_prompt(r), [im]) for im, r in zip(images, requests, strict=True)]
        return self._run(convs, seeds)


class Sequencer(Protocol):
    """Turns decompositions into ordered sub-requests (`AgentResult.parsed` is an `EditPlan`)."""

    name: str

    def sequence(
        self,
        images: Sequence[Any],
        requests: Sequence[str],
        decompositions: Sequence[Decomposition],
        seeds: Sequence[int],
    ) -> list[AgentResult]: ...


class VLMSequencer(_RetryingAgent):
    """The paper's sequencing agent: a VLM given the image and the decomposition."""

    name = "sequencing"

    def parse(self, raw: str) -> tuple[EditPlan | None, bool]:
        plan = parse_plan(raw)
        return plan, plan is not None

    def sequence(self, images, requests, decompositions, seeds) -> list[AgentResult]:
        convs = [
            user_message(sequencing_prompt(r, d), [im])
            for im, r, d in zip(images, requests, decompositions, strict=True)
        ]
        return self._run(convs, seeds)


#: Sub-request template per action ({s}: subject, {g}: goal, {a_g}/{a_s}: with an article). They
#: follow the canonical sub-requests of `inference.scenes` and read naturally on real images.
_TEMPLATES = {
    "remove": "Remove the {s}",
    "replace": "Replace the {s} with {a_g}",
    "recolor": "Recolor the {s} to {g}",
    "change text": "Change the text on the {s} to {g}",
    "resize": "Make the {s} {g}",
    "move": "Move the {s} to the {g}",
    "add": "Add {a_s} at the {g}",
    "rotate": "Rotate the {s} {g}",
    "crop": "Crop the image to the {s}",
    "restyle": "Restyle the {s} as {g}",
    "brighten": "Brighten the {s}",
    "darken": "Darken the {s}",
    "blur background": "Blur the background",
    "enhance": "Enhance the {s}",
    "restore": "Restore the {s}",
}
#: Execution order: structure first, then appearance, global edits last (as the canonical plans do).
TEMPLATE_ORDER: tuple[str, ...] = tuple(_TEMPLATES)
#: Goals that name their action whatever the action list says (the lists are deduplicated, so a
#: decomposition of "remove A, recolor B, remove C" has one "remove" for two subjects).
_GOAL_ACTIONS = {
    "removed": "remove",
    "larger": "resize",
    "smaller": "resize",
    "bigger": "resize",
    "brighter": "brighten",
    "darker": "darken",
    "blurred": "blur background",
}


def _article(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def template_steps(decomposition: Decomposition) -> tuple[str, ...]:
    """Deterministic sub-requests from a decomposition: the i-th subject with the i-th goal and action
    (the last action repeats when the list is shorter; goals like "removed" pick their own action),
    one step per subject, ordered by `TEMPLATE_ORDER`."""
    actions = [a.strip().lower() for a in decomposition.actions if a.strip()]
    subjects = [s.strip() for s in decomposition.subjects if s.strip()]
    goals = [g.strip() for g in decomposition.goals if g.strip()]
    steps = []
    for i in range(max(len(subjects), len(actions))):
        subject = subjects[min(i, len(subjects) - 1)] if subjects else "image"
        goal = goals[i] if i < len(goals) else (goals[-1] if len(goals) == 1 else "")
        action = _GOAL_ACTIONS.get(goal.lower()) or (actions[min(i, len(actions) - 1)] if actions else "edit")
        template = _TEMPLATES.get(action)
        if template is None:
            text = f"{action.capitalize()} the {subject}" + (f" to {goal}" if goal else "")
        else:
            text = template.format(s=subject, g=goal, a_g=_article(goal), a_s=_article(subject))
        rank = TEMPLATE_ORDER.index(action) if action in TEMPLATE_ORDER else len(TEMPLATE_ORDER)
        steps.append((rank, i, " ".join(text.split())))
    return tuple(dict.fromkeys(text for _, _, text in sorted(steps)))


class TemplateSequencer:
    """Baseline sequencing without a model: `template_steps` for each decomposition."""

    name = "template"
    model_id = "template"

    def sequence(self, images, requests, decompositions, seeds) -> list[AgentResult]:
        out = []
        for d in decompositions:
            steps = template_steps(d)
            plan = EditPlan(sub_requests=steps) if steps else None
            err = None if plan else "template: the decomposition has no action, subject or goal"
            out.append(AgentResult(raw=None, parsed=plan, attempts=1, format_ok=plan is not None, error=err))
        return out
