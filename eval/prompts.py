"""Eval's own prompt templates (files in `inference/templates/`, rendered by `inference.prompts.render`)."""

from __future__ import annotations

from collections.abc import Sequence

from inference.prompts import render


def verifier_prompt(request: str, principles: Sequence[str]) -> str:
    """User text of the principle-wise verifier (original image first, edited second)."""
    if not principles:
        raise ValueError(f"the verifier needs at least one principle for request {request!r}")
    return render("verifier", request=request, principles=list(principles))
