"""A real HTTP server on 127.0.0.1 for the tests of the HTTP clients (no network), and the bodies
it answers with."""

from __future__ import annotations

from typing import Any


def chat_completion(text: str) -> dict[str, Any]:
    """The body of an OpenAI chat-completions answer holding `text` (for `LocalServer` handlers)."""
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


def request_json(request: dict[str, Any]) -> Any:
    """The JSON body of a request recorded by `LocalServer`."""
    import json

    return json.loads(request["body"])


class LocalServer:
    """A real HTTP server on 127.0.0.1 in a thread, for testing the HTTP clients without the network.

    `respond(request) -> (status, headers, body)` is called for every request (from server threads);
    `request` is a dict with method, path, headers (lower-cased names) and body (bytes). Every request
    is also appended to `requests`. Use as a context manager; `url` is the base URL.
    """

    def __init__(self, respond):
        import http.server
        import threading

        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                request = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": self.rfile.read(length) if length else b"",
                }
                with server._lock:
                    server.requests.append(request)
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    status, headers, body = server.respond(request)
                finally:
                    with server._lock:
                        server.active -= 1
                if isinstance(body, (dict, list)):
                    import json

                    body = json.dumps(body).encode()
                    headers = {"Content-Type": "application/json", **headers}
                elif isinstance(body, str):
                    body = body.encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            do_GET = do_POST = _handle

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
