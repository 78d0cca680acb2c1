"""Ground-truth decompositions for real benchmarks: import them from JSONL, or annotate with a
teacher VLM through any `inference.chat.ChatBackend` (an OpenAI-compatible endpoint via
`inference.chat_backends.make_backend("openai" | "gemini", ...)`, or a local `vllm serve`).

The annotator runs a bounded number of requests at once, retries failed calls with backoff,
retries invalid answers (then rejects and counts them), validates through the shared protocol
and journals every raw answer the moment it arrives (`inference.journal`, keyed by model + prompt
+ image hash + sampling, in `<cache>/answers.jsonl`), so a rerun, even after a SIGKILL, asks for
nothing it was already told. API keys stay in the environment: anything written (journal,
report, outputs, log lines) passes through `redact`, which masks the values of secret-looking
environment variables. A dead teacher stops the run (`inference.http_client.ServerDown`).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from data_prep.report import Report
from inference.chat import ChatBackend, ChatResult, Sampling
from inference.fileio import remove_stale_temps, write_jsonl
from inference.http_client import redact
from inference.journal import journaled
from inference.prompts import decomposition_prompt, user_message
from inference.protocol import Decomposition, parse_decomposition
from inference.records import Record

log = logging.getLogger(__name__)

__all__ = ["redact", "read_ground_truth", "attach_ground_truth", "TeacherAnnotator", "write_annotations"]


# ---------------------------------------------------------------------------------------------
# Import


def read_ground_truth(path: str | os.PathLike, report: Report | None = None) -> dict[str, Decomposition]:
    """Read `{"id": ..., "decomposition": {actions, subjects, goals}}` lines (or the three keys at the
    top level). Invalid lines are counted in `report` (or raise ValueError naming the line if none)."""
    path = Path(path)
    out: dict[str, Decomposition] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
                    raise ValueError("line must be a JSON object with a string 'id'")
                gt = obj.get("decomposition", obj)
                out[obj["id"]] = Decomposition.from_ground_truth(gt)
            except ValueError as exc:
                if report is None:
                    raise ValueError(f"{path}:{lineno}: {exc}") from None
                report.seen += 1
                report.skip(f"{path.name}:{lineno}", "invalid_ground_truth", str(exc))
                continue
            if report is not None:
                report.seen += 1
                report.kept += 1
    return out


def attach_ground_truth(
    records: Iterable[Record], truth: dict[str, Decomposition], report: Report
) -> Iterator[Record]:
    """Records with their decomposition filled from `truth` (existing ones are kept)."""
    for record in records:
        gt = truth.get(record.id)
        if gt is not None:
            record = replace(record, decomposition=gt)
            report.note("ground_truth_attached")
        elif record.decomposition is None:
            report.note("no_ground_truth")
        yield record


# ---------------------------------------------------------------------------------------------
# Teacher annotation


@dataclass(frozen=True)
class Annotation:
    id: str
    decomposition: Decomposition | None
    raw: str | None
    attempts: int
    cached: bool
    error: str | None = None


def valid_decomposition(answer: str) -> Decomposition | None:
    """The answer's decomposition if every field is present and non-empty, else None."""
    parsed = parse_decomposition(answer).to_decomposition()
    if parsed is None:
        return None
    clean = Decomposition(
        actions=tuple(a.strip() for a in parsed.actions if a.strip()),
        subjects=tuple(s.strip() for s in parsed.subjects if s.strip()),
        goals=tuple(g.strip() for g in parsed.goals if g.strip()),
    )
    return clean if clean.actions and clean.subjects and clean.goals else None


class TeacherAnnotator:
    """Annotate records with a teacher VLM: bounded concurrency, retries, validation, and an answer
    journal in `cache_dir` (every answer kept as it arrives)."""

    def __init__(
        self,
        backend: ChatBackend,
        cache_dir: str | os.PathLike,
        max_concurrency: int = 4,
        invalid_retries: int = 2,
        call_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_new_tokens: int = 512,
        sleep=time.sleep,
    ):
        self.backend = journaled(backend, cache_dir)
        self.max_concurrency = max(1, max_concurrency)
        self.invalid_retries = invalid_retries
        self.call_retries = call_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_new_tokens = max_new_tokens
        self._sleep = sleep

    def sampling(self, attempt: int) -> Sampling:
        """Greedy first; later attempts sample (a greedy retry would repeat the same answer)."""
        temperature = 0.0 if attempt == 0 else 0.7
        return Sampling(temperature=temperature, max_new_tokens=self.max_new_tokens, n=1, seed=attempt)

    def _call(self, conversation, sampling: Sampling) -> ChatResult:
        """The teacher's answer to one request (from the journal, or asked); a failed request is
        retried (with jittered backoff) unless the server refused it for good. Raises RuntimeError
        (redacted) when it never answers, `ServerDown` when the server is dead."""
        result = None
        for call in range(self.call_retries + 1):
            result = self.backend.chat([conversation], sampling)[0]
            if result.ok:
                return result
            if not result.retryable:
                break
            if call < self.call_retries:
                wait = min(self.backoff_s * 2**call, self.max_backoff_s) * (0.5 + random.random() / 2)
                log.warning(
                    "teacher call failed (%s); retry %d in %.1fs", redact(result.error), call + 1, wait
                )
                self._sleep(wait)
        raise RuntimeError(redact(result.error if result is not None else "no call made"))

    def annotate_one(self, record_id: str, instruction: str, image: Image.Image) -> Annotation:
        conversation = user_message(decomposition_prompt(instruction), [image])
        all_cached = True
        raw = None
        for attempt in range(self.invalid_retries + 1):
            try:
                result = self._call(conversation, self.sampling(attempt))
            except RuntimeError as exc:
                return Annotation(record_id, None, None, attempt + 1, False, error=str(exc))
            raw = redact(result.texts[0])
            all_cached = all_cached and result.cached
            gt = valid_decomposition(raw)
            if gt is not None:
                return Annotation(record_id, gt, raw, attempt + 1, all_cached)
        return Annotation(
            record_id, None, redact(raw or ""), self.invalid_retries + 1, all_cached, error="invalid_answer"
        )

    def annotate(self, records: Iterable[Record], report: Report) -> Iterator[Annotation]:
        """Annotations in input order, at most `max_concurrency` requests in flight."""
        window: deque[Future] = deque()
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency)
        try:

            def drain_one() -> Annotation:
                result = window.popleft().result()
                report.seen += 1
                if result.decomposition is not None:
                    report.kept += 1
                    report.note("cached" if result.cached else "annotated")
                    if result.attempts > 1:
                        report.note("invalid_answer_retried")
                elif result.error == "invalid_answer":
                    report.skip(
                        result.id,
                        "invalid_answer",
                        f"rejected after {result.attempts} attempts: {result.raw!r:.200}",
                    )
                else:
                    report.skip(result.id, "teacher_error", result.error or "")
                return result

            for record in records:
                try:
                    image = record.load_image()
                except (OSError, ValueError) as exc:
                    window.append(
                        _done(Annotation(record.id, None, None, 0, False, error=f"unreadable image: {exc}"))
                    )
                else:
                    window.append(pool.submit(self.annotate_one, record.id, record.instruction, image))
                while len(window) >= 2 * self.max_concurrency:
                    yield drain_one()
            while window:
                yield drain_one()

        finally:  # done, or stopping: finish the records in flight (a dead teacher's fail at once), drop the rest
            pool.shutdown(wait=True, cancel_futures=True)


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def write_annotations(path: str | os.PathLike, annotations: Iterable[Annotation], model: str) -> int:
    """The importer's JSONL (`read_ground_truth` reads it back): accepted annotations only. Nothing
    accepted: no file is written (an empty ground truth would pass for a finished one); returns 0."""
    remove_stale_temps(Path(path).parent, recursive=False, target=Path(path).name)
    rows = [
        {"id": a.id, "decomposition": a.decomposition.to_ground_truth(), "model": model}
        for a in annotations
        if a.decomposition is not None
    ]
    return write_jsonl(path, rows) if rows else 0
