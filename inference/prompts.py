"""Prompt templates (jinja files in `inference/templates/`), rendered in one place: the agents'
prompts and eval's judge and verifier prompts.

The templates are versioned with `inference.protocol`, which parses the answers they ask for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from inference.protocol import ACTION_VOCABULARY, Decomposition

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
#: Placeholder verl's RLHFDataset replaces with the image tokens (one per image, in the prompt text).
IMAGE_PLACEHOLDER = "<image>"


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        autoescape=False,
    )


def render(name: str, **variables: Any) -> str:
    """Render `templates/<name>.jinja`; a missing variable is an error, not an empty string."""
    return _env().get_template(f"{name}.jinja").render(**variables).strip()


def decomposition_prompt(request: str) -> str:
    """User text of the decomposition agent (the image goes before it)."""
    return render("decompose", request=request, actions=ACTION_VOCABULARY)


def sequencing_prompt(request: str, decomposition: Decomposition) -> str:
    """User text of the sequencing agent."""
    dump = lambda xs: json.dumps(list(xs), ensure_ascii=False)  # noqa: E731
    return render(
        "sequence",
        request=request,
        actions_json=dump(decomposition.actions),
        subjects_json=dump(decomposition.subjects),
        goals_json=dump(decomposition.goals),
    )


def judge_prompt(request: str) -> str:
    """The paper's Table 2 judge prompt (original image first, edited second)."""
    return render("judge", request=request)


def verifier_prompt(request: str, principles: Sequence[str]) -> str:
    """User text of the principle-wise verifier (original image first, edited second)."""
    if not principles:
        raise ValueError(f"the verifier needs at least one principle for request {request!r}")
    return render("verifier", request=request, principles=list(principles))


def user_message(text: str, images: list[Any] = ()) -> list[dict[str, Any]]:
    """A one-turn chat in the HF/OpenAI content-parts shape: images first, then the text."""
    parts: list[dict[str, Any]] = [{"type": "image", "image": im} for im in images]
    parts.append({"type": "text", "text": text})
    return [{"role": "user", "content": parts}]
