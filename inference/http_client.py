"""HTTP with timeouts and bounded retries, shared by the OpenAI-compatible chat backend and the hosted
image editors. Retries 408/429/5xx, timeouts, dropped connections and 200s whose body is not JSON
with exponential backoff (honouring Retry-After); any other status fails at once with the server's
message (`HTTPRequestError.retryable` is False then). Each retry is logged at DEBUG. API keys come
from the environment and are never logged or put in error messages (`redact`). An error is one
line: the status and the server's error message; the whole body only with DEBUG logging (--debug).

A dead server fails fast: a `CircuitBreaker` (one per backend) watches every attempt, and when
the first `trip_after` attempts all fail the same way (connection refused, 401, 403, 404, 5xx)
before any success, it opens: every later request raises `ServerDown` at once, with one line
saying what failed, how often, and the URL without secrets. Sporadic faults never trip it.

`STOP` is set when the run is being interrupted (SIGTERM, Ctrl-C: `inference.outcome.run_cli`):
no new request or retry is sent after it, so a stopping run only waits for the requests in flight.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from inference.fileio import BadImage, load_image, png_bytes

log = logging.getLogger(__name__)

#: Set while the run is being interrupted: no request or retry is sent any more.
STOP = threading.Event()
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)

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


class ServerDown(Exception):
    """The server failed the first requests all the same way: the stage stops (not one item's
    failure, so deliberately not a RuntimeError that per-item handlers would swallow)."""


def redact(text: str) -> str:
    """Mask the values of secret-looking environment variables and bearer tokens in `text`."""
    text = str(text)
    for name, value in os.environ.items():
        if _SECRET_NAME.search(name) and value and len(value) >= 6 and value in text:
            text = text.replace(value, "***")
    return re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{6,}", r"\1***", text)


def public_url(url: str) -> str:
    """`url` without user info or query string (where keys hide), secrets redacted."""
    try:
        parsed = httpx.URL(url)
        url = str(parsed.copy_with(username=None, password=None, query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        pass
    return redact(url)


def failure_kind(status: int | None = None, exc: BaseException | None = None) -> str | None:
    """The kind of a failed attempt the circuit breaker counts (None: a fault that says nothing
    about the server as a whole: a timeout, a rate limit, a dropped or garbled answer)."""
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if status in (401, 403, 404) or (status is not None and status >= 500):
        return f"HTTP {status}"
    return None


class CircuitBreaker:
    """Opens when the first `trip_after` attempts all failed the same way, or, once the server has
    answered, after `trip_after_answers` consecutive failures of one kind (the server died mid-run)."""

    def __init__(self, url: str, trip_after: int = 8, trip_after_answers: int = 64):
        self.url = public_url(url)
        self.trip_after, self.trip_after_answers = trip_after, trip_after_answers
        self.successes = 0
        self._streak_kind: str | None = None
        self._streak = 0
        self.attempts: Counter = Counter()
        self.reason: str | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise `ServerDown` when open."""
        if self.reason is not None:
            raise ServerDown(self.reason)

    def record(self, ok: bool, kind: str | None = None) -> None:
        """Book one attempt: a success, or a failure of `kind` (None: a kind that never trips)."""
        with self._lock:
            self.attempts["ok" if ok else (kind or "other")] += 1
            if ok:
                self.successes += 1
                self._streak_kind, self._streak = None, 0
                return
            if kind is None or kind != self._streak_kind:
                self._streak_kind, self._streak = kind, 0
            if kind is None:
                return
            self._streak += 1
            limit = self.trip_after if not self.successes else self.trip_after_answers
            if self.reason is None and self._streak >= limit:
                first = "the first " if not self.successes else "the last "
                total = sum(self.attempts.values())
                self.reason = (
                    f"{self.url}: {first}{self._streak} requests all failed with {kind}"
                    f" ({self.attempts[kind]} of {total} so far, {self.successes} answered). {_hint(kind)}"
                )


def _hint(kind: str) -> str:
    return {
        "connection refused": "Is the server running at that URL?",
        "HTTP 401": "Check the API key (--api-key-env).",
        "HTTP 403": "Check the API key and its permissions.",
        "HTTP 404": "Check the URL and the model name.",
    }.get(kind, "The server is failing; try again later or check its logs.")


def _error_text(resp: httpx.Response) -> str:
    """One line about a failed response: the JSON error message if there is one; the whole body
    (its first 300 characters) only with DEBUG logging."""
    text = resp.text
    message = ""
    try:
        body = resp.json()
        error = body.get("error") if isinstance(body, dict) else None
        message = str(error.get("message") if isinstance(error, dict) else error or body.get("message") or "")
    except (ValueError, AttributeError):
        pass
    if log.isEnabledFor(logging.DEBUG):
        message = text[:300]
    message = " ".join(message.split())[:200]
    return f"HTTP {resp.status_code}" + (f": {redact(message)}" if message else "")


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
    breaker: CircuitBreaker | None = None,
) -> dict[str, Any]:
    """POST and return the JSON body, retrying retryable statuses, transport errors and bodies that are
    not JSON; raises `HTTPRequestError` when the retries run out or the status is final, and
    `ServerDown` when `breaker` is (or becomes) open."""
    last = ""
    shown = public_url(url)
    for attempt in range(policy.max_retries + 1):
        if STOP.is_set():
            raise HTTPRequestError(f"POST {shown}: not sent, the run is stopping", retryable=False)
        if breaker is not None:
            breaker.check()
        retry_after = None
        kind = None
        try:
            resp = client.post(
                url, json=json, data=data, files=files, headers=headers, timeout=policy.timeout_s
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            last = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
            kind = failure_kind(exc=exc)
        else:
            if resp.status_code < 400:
                try:
                    body = resp.json()
                except ValueError:  # a truncated or garbled body: the next try may be whole
                    last = f"HTTP {resp.status_code} with a body that is not JSON"
                    if log.isEnabledFor(logging.DEBUG):
                        last += f": {resp.text[:200]!r}"
                else:
                    if breaker is not None:
                        breaker.record(True)
                    return body
            else:
                last = _error_text(resp)
                kind = failure_kind(status=resp.status_code)
                if not retryable_status(resp.status_code):
                    if breaker is not None:
                        breaker.record(False, kind)
                        breaker.check()
                    raise HTTPRequestError(f"POST {shown} failed: {last}", resp.status_code, retryable=False)
                retry_after = resp.headers.get("retry-after")
        if breaker is not None:
            breaker.record(False, kind)
            breaker.check()
        if attempt < policy.max_retries:
            wait = policy.delay(attempt + 1, retry_after)
            log.debug("POST %s: %s; retry %d/%d in %.2fs", shown, last, attempt + 1, policy.max_retries, wait)
            _backoff(wait, breaker)
    raise HTTPRequestError(f"POST {shown} failed after {policy.max_retries + 1} attempts: {last}")


def _backoff(seconds: float, breaker: CircuitBreaker | None) -> None:
    """Sleep `seconds`, waking early when the run stops or the breaker opens (so a dead server's
    stage ends as soon as it is known dead, not after every thread's backoff)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if breaker is not None and breaker.reason is not None:
            return
        if STOP.wait(min(left, 0.05)):
            return


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
