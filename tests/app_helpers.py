"""Test helpers for the app: serve it in-process on 127.0.0.1, and a fake OpenAI-compatible judge.

Used by tests/test_app.py (through gradio_client) and tests/test_app_browser.py (headless Chromium).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from local_server import LocalServer, chat_completion

#: One answer the rubric judge and the principle verifier both read (JSON with the three criteria
#: and a verdict for up to 8 principles).
JUDGE_ANSWER = (
    '{"fulfillment": 4, "quality": 3, "preservation": 2, "reasoning": "the edit is done", '
    '"verdicts": ['
    + ", ".join(f'{{"principle": {i}, "verdict": "yes", "reasoning": "holds"}}' for i in range(1, 9))
    + "]}"
)


class FakeJudgeServer(LocalServer):
    """`POST /v1/chat/completions` on 127.0.0.1 answering `JUDGE_ANSWER`; `url` ends in /v1."""

    def __init__(self, answer: str = JUDGE_ANSWER):
        self.answer = answer
        super().__init__(self._respond)

    def _respond(self, request: dict[str, Any]):
        if request["method"] != "POST" or request["path"] != "/v1/chat/completions":
            return 404, {}, {"error": {"message": f"no route {request['path']}"}}
        return 200, {}, chat_completion(self.answer)

    @property
    def url(self) -> str:
        return super().url + "/v1"


@contextlib.contextmanager
def running_app(argv: Sequence[str]) -> Iterator[tuple[Any, str]]:
    """(EditingApp, URL) of the app built from `argv` and served on 127.0.0.1 until the block ends.

    Gradio's environment variables are restored afterwards (the app points them at its --out).
    """
    from app.editing_app import EditingApp, build_parser, configure_gradio_environment, serve

    args = build_parser().parse_args(list(argv))
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "GRADIO_ANALYTICS_ENABLED")}
    blocks = None
    try:
        configure_gradio_environment(args.out.resolve())
        app = EditingApp(args)
        blocks, url = serve(app, args.host, args.port, block=False)
        yield app, url
    finally:
        if blocks is not None:
            blocks.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
