"""A fault-injecting OpenAI-compatible chat server on 127.0.0.1, for tests and the fault benchmark,
on `LocalHTTPServer` (a threaded server on 127.0.0.1, also the tests' `LocalServer`).

Real HTTP (stdlib `http.server` in a thread), so the clients' whole stack is exercised: each request
draws one outcome from `rates` (fixed by seed, item and how often the item was asked): an injected fault, or the good answer `answer(payload)`.

Faults: ``500`` (server error), ``429`` (rate limit with ``Retry-After``), ``slow`` (the answer comes
after `slow_s`, meant to exceed the client's timeout; never counted as answered), ``malformed`` (200
whose body is broken JSON), ``dropped`` (the connection closes without a response).

The server keeps per-item books (`item_key(payload)` names the item): requests, faults by kind, good
answers sent, and requests that arrived for an item already answered (a client that re-asks what it
was already told). It is bounded: after `max_requests` requests, or `max_seconds` after start, it
answers 503 to everything and says so in `exhausted`.

`hold_after=N` freezes the server once it has sent N good answers: later requests wait (unanswered,
uncounted in the items' books) until `release()`, and `held` is set. The fault bench kills its
client at that moment, so "killed after 40% of the answers arrived" is exact, not a race.
"""

from __future__ import annotations

import abc
import hashlib
import http.server
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAULTS: tuple[str, ...] = ("500", "429", "slow", "malformed", "dropped")
#: The issue's two fault mixes: a bad day, and a very bad one.
MILD_RATES: dict[str, float] = {"500": 0.10, "429": 0.05, "slow": 0.05, "malformed": 0.05, "dropped": 0.05}
HARSH_RATES: dict[str, float] = {"500": 0.30, "malformed": 0.30}


def text_of(payload: Mapping[str, Any]) -> str:
    """All text parts of a chat-completions request, joined (what tells the items apart)."""
    texts = []
    for message in payload.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(texts)


def default_item_key(payload: Mapping[str, Any]) -> str:
    """The item of a request: a digest of its text parts."""
    return hashlib.sha256(text_of(payload).encode()).hexdigest()[:16]


def messages_key(payload: Mapping[str, Any]) -> str:
    """The item of a request: a digest of its whole messages, images included (items that share a
    request text but not an image stay apart; retries with another sampling stay together)."""
    blob = json.dumps(payload.get("messages"), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class ItemBooks:
    """What the server saw and did for one item."""

    requests: int = 0
    answered: int = 0
    faults: Counter = field(default_factory=Counter)
    after_answer: int = 0


def send(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: Any,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Write one response: bytes as they are, str encoded, anything else as JSON (with its
    Content-Type). A client that gave up (timeout, dropped connection) is not an error."""
    headers = dict(headers or {})
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **headers}
    try:
        handler.send_response(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


class _QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A client that went away (killed, timed out) is no server error: no traceback for it."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class LocalHTTPServer(abc.ABC):
    """A threaded HTTP server on 127.0.0.1 (a free port) that hands every GET and POST to
    `handle(handler, request)`; `request` has method, path, headers (lower-cased names) and body
    (bytes). Use as a context manager; `url` is the base URL."""

    def __init__(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length) if length else b"",
                }
                server.handle(self, request)

            do_GET = do_POST = _handle

        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @abc.abstractmethod
    def handle(self, handler: http.server.BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        """Answer one request (`send` writes the response); each server says what it serves."""

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FaultyChatServer(LocalHTTPServer):
    """`POST <url>/chat/completions` with injected faults; use as a context manager, `url` ends in /v1."""

    def __init__(
        self,
        answer: Callable[[dict[str, Any]], str],
        rates: Mapping[str, float],
        seed: int = 0,
        item_key: Callable[[dict[str, Any]], str] = default_item_key,
        retry_after: str = "0",
        slow_s: float = 1.0,
        max_requests: int = 2000,
        max_seconds: float = 120.0,
        hold_after: int | None = None,
    ):
        unknown = set(rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {FAULTS}")
        if sum(rates.values()) > 1.0 + 1e-9 or any(r < 0 for r in rates.values()):
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {dict(rates)}")
        self.answer, self.rates, self.item_key = answer, dict(rates), item_key
        self.retry_after, self.slow_s = retry_after, slow_s
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.items: dict[str, ItemBooks] = {}
        self.total = 0
        self.exhausted = False
        self.seed = seed
        self.hold_after = hold_after
        #: Set when `hold_after` good answers were sent and the server froze.
        self.held = threading.Event()
        self._released = threading.Event()
        self._answers = 0
        self.held_requests = 0
        #: `time.monotonic()` of the first request (None before it).
        self.first_request_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = time.monotonic()
        super().__init__()

    # ------------------------------------------------------------------ books

    @property
    def url(self) -> str:
        return super().url + "/v1"

    def stats(self) -> dict[str, Any]:
        """Totals: requests, good answers, faults by kind, re-asks of answered items, budget state."""
        with self._lock:
            faults: Counter = Counter()
            for books in self.items.values():
                faults.update(books.faults)
            return {
                "requests": self.total,
                "items_asked": len(self.items),
                "answers_sent": sum(b.answered for b in self.items.values()),
                "faults": dict(sorted(faults.items())),
                "requests_after_answer": sum(b.after_answer for b in self.items.values()),
                "exhausted": self.exhausted,
                "held_requests": self.held_requests,
            }

    def release(self) -> None:
        """Unfreeze a held server: the held requests are dropped, later ones answered as usual."""
        self.hold_after = None
        self._released.set()

    def _hold(self, handler: http.server.BaseHTTPRequestHandler) -> bool:
        """Whether this request met a frozen server (then it waits for `release` and gets no answer)."""
        with self._lock:
            if self.hold_after is None or self._answers < self.hold_after:
                return False
            self.held.set()
            self.total += 1
            self.held_requests += 1
        self._released.wait(self.max_seconds)
        handler.close_connection = True
        return True

    def _draw(self, key: str, count: int) -> str:
        """The outcome of the `count`-th request for item `key`: fixed by (seed, item, count), so the
        faults an item meets do not depend on how the client's threads interleave."""
        r, edge = random.Random(f"{self.seed}/{key}/{count}").random(), 0.0
        for kind in FAULTS:
            edge += self.rates.get(kind, 0.0)
            if r < edge:
                return kind
        return "ok"

    # ------------------------------------------------------------------ requests

    def handle(self, handler: http.server.BaseHTTPRequestHandler, request: dict[str, Any]) -> None:
        try:
            payload = json.loads(request["body"])
        except ValueError:
            return self._send(handler, 400, {"error": {"message": "request body is not JSON"}})
        key = self.item_key(payload)
        if not handler.path.rstrip("/").endswith("/chat/completions"):
            with self._lock:
                self.total += 1
            return self._send(handler, 404, {"error": {"message": f"no route {handler.path}"}})
        with self._lock:
            if self.first_request_at is None:
                self.first_request_at = time.monotonic()
        if self._hold(handler):
            return None
        with self._lock:
            self.total += 1
            over = self.total > self.max_requests or time.monotonic() - self._started > self.max_seconds
            self.exhausted = self.exhausted or over
            books = self.items.setdefault(key, ItemBooks())
            books.requests += 1
            books.after_answer += books.answered > 0
            kind = "budget" if over else self._draw(key, books.requests)
            if kind != "ok":
                books.faults[kind] += 1
        if kind == "budget":
            return self._send(handler, 503, {"error": {"message": "fault server: request budget spent"}})
        if kind == "500":
            return self._send(handler, 500, {"error": {"message": "injected server error"}})
        if kind == "429":
            return self._send(handler, 429, {"error": {"message": "injected rate limit"}}, self.retry_after)
        if kind == "dropped":
            handler.close_connection = True
            return None
        if kind == "malformed":
            return self._send(handler, 200, b'{"id": "x", "choices": [{"index": 0, "message": {"con')
        text = self.answer(payload)
        if kind == "slow":
            self._stop.wait(self.slow_s)  # past the client's timeout: the answer arrives too late
        else:
            with self._lock:
                books.answered += 1
                self._answers += 1
        n = int(payload.get("n") or 1)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            for i in range(n)
        ]
        return self._send(handler, 200, {"object": "chat.completion", "choices": choices})

    @staticmethod
    def _send(handler, status: int, body: Any, retry_after: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        send(handler, status, body, headers)

    def __enter__(self) -> FaultyChatServer:
        self._started = time.monotonic()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._released.set()
        super().__exit__(*exc)
