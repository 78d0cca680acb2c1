"""The chat-backend interface shared by the agents (inference) and the judges (eval).

A conversation is a list of messages in the HF/OpenAI content-parts shape, images as PIL objects:
``[{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "..."}]}]``
(see `inference.prompts.user_message`). Concrete backends (transformers, vLLM, OpenAI-compatible
HTTP) live in `inference.llm` and are built by name with `inference.llm.make_backend`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

Conversation = list[dict[str, Any]]


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


class ChatBackend(abc.ABC):
    """Batched multimodal chat completion."""

    #: Model identifier recorded in traces and cache keys.
    model_id: str = "unknown"

    @abc.abstractmethod
    def chat(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        """Return `sampling.n` completions for each conversation, in input order."""

    def chat_one(self, conversation: Conversation, sampling: Sampling = Sampling()) -> str:
        """First completion of a single conversation."""
        return self.chat([conversation], sampling)[0][0]


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
