"""The chat-backend interface shared by the agents (inference) and the judges (eval).

A conversation is a list of messages in the HF/OpenAI content-parts shape, images as PIL objects:
``[{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "..."}]}]``
(see `inference.prompts.user_message`). Concrete backends (transformers, vLLM, OpenAI-compatible
HTTP) live in `inference.chat_backends` and are built by name with `inference.chat_backends.make_backend`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Conversation = list[dict[str, Any]]
#: Called with (index in the batch, result) the moment one conversation's result is known.
OnResult = Callable[[int, "ChatResult"], None]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    n: int = 1
    seed: int | None = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChatResult:
    """What one conversation of a batch came to: its completions, or the error that prevented them.

    `retryable` says whether asking again may help (a rate limit, a server error, a timeout, a
    malformed answer) or not (a 400 for this request, an input the engine refuses).
    """

    texts: tuple[str, ...] = ()
    error: str | None = None
    retryable: bool = True
    #: True when the answer came from an answer journal (`inference.journal`), not the model.
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        """The first completion; raises `ChatError` when the request failed."""
        if self.error is not None:
            raise ChatError(self.error, retryable=self.retryable)
        return self.texts[0]


class ChatError(RuntimeError):
    """A chat request failed for good (after the backend's own retries)."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


#: Exceptions that say the input itself is the problem: asking again gives the same answer.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError)


def failed(exc: BaseException) -> ChatResult:
    """The `ChatResult` of a request that raised `exc` (retryable unless the input is at fault)."""
    retryable = getattr(exc, "retryable", not isinstance(exc, _INPUT_ERRORS))
    return ChatResult(error=f"{type(exc).__name__}: {str(exc)[:500]}", retryable=bool(retryable))


class ChatBackend(abc.ABC):
    """Batched multimodal chat completion with one result per request.

    Callers use `chat`: one `ChatResult` per conversation, in input order, never raising for one
    item's failure, so a caller keeps every good answer and retries only the failed items.
    Engines implement `generate` (the whole batch, may raise); when it raises, `chat` asks item by
    item so one bad item cannot fail its batch. Backends that see each request's fate on its own
    (HTTP) override `chat` directly.

    `chat(..., on_result=f)` calls `f(index, result)` as soon as each result is known (an HTTP
    answer the moment it arrives; a local engine's after each of its `batch_size` chunks), so an
    answer journal keeps it even if the process dies before the batch ends.
    """

    #: Model identifier recorded in traces and cache keys.
    model_id: str = "unknown"

    @abc.abstractmethod
    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        """`sampling.n` completions for each conversation, in input order; raises if the batch fails."""

    def chat(
        self, conversations: Sequence[Conversation], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[ChatResult]:
        """One result per conversation (answer or error), in input order; chunks of the engine's
        `batch_size` (all at once without one), each chunk's results reported when it returns."""
        step = int(getattr(self, "batch_size", 0) or 0) or max(1, len(conversations))
        out: list[ChatResult] = []
        for start in range(0, len(conversations), step):
            chunk = self._chat_chunk(conversations[start : start + step], sampling)
            if on_result is not None:
                for offset, result in enumerate(chunk):
                    on_result(start + offset, result)
            out += chunk
        return out

    def _chat_chunk(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[ChatResult]:
        if not conversations:
            return []
        try:
            return self._checked(conversations, sampling)
        except Exception as exc:  # noqa: BLE001 - the per-item calls below name the culprit
            if len(conversations) == 1:
                return [failed(exc)]
        out = []
        for conversation in conversations:
            try:
                out += self._checked([conversation], sampling)
            except Exception as exc:  # noqa: BLE001
                out.append(failed(exc))
        return out

    def _checked(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[ChatResult]:
        answers = self.generate(conversations, sampling)
        if len(answers) != len(conversations):
            raise RuntimeError(
                f"{type(self).__name__} returned {len(answers)} answers for {len(conversations)}"
            )
        out = []
        for texts in answers:
            if len(texts) < sampling.n:
                out.append(ChatResult(error=f"got {len(texts)} completions, asked for n={sampling.n}"))
            else:
                out.append(ChatResult(texts=tuple(texts[: sampling.n])))
        return out

    def chat_one(self, conversation: Conversation, sampling: Sampling = Sampling()) -> str:
        """First completion of a single conversation; raises `ChatError` if it failed."""
        return self.chat([conversation], sampling)[0].text


class MissingExtraError(ImportError):
    """A GPU-only (or otherwise optional) package is not installed."""

    def __init__(self, package: str, feature: str, extra_file: str = "requirements-gpu.txt"):
        super().__init__(
            f"{feature} needs the optional package '{package}', which is not installed. "
            f"Install the GPU extras: pip install -r {extra_file} (see README, 'GPU install')."
        )


def require(module: str, feature: str, package: str | None = None):
    """Import an optional module lazily, failing with a message that names the missing extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(package or module, feature) from exc
