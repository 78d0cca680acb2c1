"""A real HTTP server on 127.0.0.1 for the tests of the HTTP clients (no network), and the bodies
it answers with."""

from __future__ import annotations

import json
import threading
from typing import Any

from inference.faults import LocalHTTPServer, send


def chat_completion(text: str) -> dict[str, Any]:
    """The body of an OpenAI chat-completions answer holding `text` (for `LocalServer` handlers)."""
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


def request_json(request: dict[str, Any]) -> Any:
    """The JSON body of a request recorded by `LocalServer`."""
    return json.loads(request["body"])


class LocalServer(LocalHTTPServer):
    """A real HTTP server on 127.0.0.1 in a thread, for testing the HTTP clients without the network.

    `respond(request) -> (status, headers, body)` is called for every request (from server threads);
    `request` is a dict with method, path, headers (lower-cased names) and body (bytes). Every request
    is also appended to `requests`; `active` / `max_active` count requests in flight. Use as a context
    manager; `url` is the base URL.
    """

    def __init__(self, respond):
        super().__init__()
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def handle(self, handler: Any, request: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(request)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            status, headers, body = self.respond(request)
        finally:
            with self._lock:
                self.active -= 1
        send(handler, status, body, headers)
