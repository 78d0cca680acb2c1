"""HTTP with timeouts and bounded retries, shared by the OpenAI-compatible chat backend and the hosted
image editors. Retries 408/429/5xx, timeouts, dropped connections and 200s whose body is not JSON
with exponential backoff (honouring Retry-After); any other status fails at once with the server's
message (`HTTPRequestError.retryable` is False then). Each retry is logged at DEBUG. API keys come from the environment and are
never logged or put in error messages.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from inference.fileio import BadImage, load_image, png_bytes

log = logging.getLogger(__name__)

#: 4xx statuses worth another try (request timeout, rate limit); every 5xx but 501 is retried too.
RETRY_STATUSES = frozenset({408, 429})


def retryable_status(status: int) -> bool:
    """Whether a response status is worth another try: 408, 429, or a server error other than 501."""
    return status in RETRY_STATUSES or (status >= 500 and status != 501)


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for one response and how often to try again."""

    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before retry `attempt` (1-based): Retry-After if the server sent one, else jittered backoff."""
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                pass
        base = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
        return base * (0.5 + random.random() / 2)


class HTTPRequestError(RuntimeError):
    """A request failed for good (non-retryable status, or retries exhausted)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = True):
        super().__init__(message)
        self.status = status
        #: False for a refusal of this very request (4xx): asking again gets the same answer.
        self.retryable = retryable


def api_key_from_env(var: str | None) -> str | None:
    """The key in environment variable `var` (None when unset); callers never log it."""
    return os.environ.get(var) if var else None


def post(
    client: httpx.Client,
    url: str,
    policy: RetryPolicy,
    *,
    json: Any = None,
    data: dict[str, Any] | None = None,
    files: Any = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """POST and return the JSON body, retrying retryable statuses, transport errors and bodies that are
    not JSON; raises `HTTPRequestError` when the retries run out or the status is final."""
    last = ""
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        try:
            resp = client.post(
                url, json=json, data=data, files=files, headers=headers, timeout=policy.timeout_s
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if resp.status_code < 400:
                try:
                    return resp.json()
                except ValueError:  # a truncated or garbled body: the next try may be whole
                    last = f"HTTP {resp.status_code} with a body that is not JSON: {resp.text[:200]!r}"
            else:
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if not retryable_status(resp.status_code):
                    raise HTTPRequestError(f"POST {url} failed: {last}", resp.status_code, retryable=False)
                retry_after = resp.headers.get("retry-after")
        if attempt < policy.max_retries:
            wait = policy.delay(attempt + 1, retry_after)
            log.debug("POST %s: %s; retry %d/%d in %.2fs", url, last, attempt + 1, policy.max_retries, wait)
            time.sleep(wait)
    raise HTTPRequestError(f"POST {url} failed after {policy.max_retries + 1} attempts: {last}")


def data_url(image: Image.Image) -> str:
    """An image as a base64 PNG data URL (what OpenAI-compatible chat endpoints accept)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def decode_image(b64: str) -> Image.Image:
    """A base64 image from a response, through the one image loader (RGB, alpha on white, EXIF
    orientation applied), so an editor's output means the same pixels as a file; errors name the problem."""
    try:
        image, _ = load_image(base64.b64decode(b64), check=False)
    except (BadImage, ValueError) as exc:  # ValueError: not base64
        raise HTTPRequestError(f"response image cannot be decoded: {type(exc).__name__}: {exc}") from None
    return image
