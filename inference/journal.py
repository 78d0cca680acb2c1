"""Every answer kept the moment it arrives: an append-only answer journal under any chat backend.

A paid judge, a teacher VLM or the pipeline's agents must never be asked twice for what they
already answered, whatever kills the run (SIGKILL, preemption, Ctrl-C). `JournaledBackend` wraps
any `inference.chat.ChatBackend`: before asking, it looks each request up in an `AnswerJournal`;
each answer that arrives is appended to the journal file at once (one JSON line, written with
O_APPEND and fsync'd before the caller sees the answer), from the thread that received it. A kill at
any moment loses at most the requests in flight; a rerun replays the journal and asks only the rest.

The key of a request is its model id, its messages (images by the sha256 of their pixels) and its
sampling settings: a retry that samples with another seed is another request, so a rerun replays
the same sequence of answers (and of retries) as the first run had. Only answers are journaled;
failures are asked again. Text passes through `inference.http_client.redact` before it is written.

One journal file is one JSONL file; a line torn by a kill mid-write is cut off when the journal is
opened (and never read as an answer).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.chat import ChatBackend, ChatResult, Conversation, OnResult, Sampling
from inference.fileio import image_hash
from inference.http_client import redact

log = logging.getLogger(__name__)

#: File name of a stage's journal in its cache or output folder.
JOURNAL_NAME = "answers.jsonl"
_OPEN: weakref.WeakSet[AnswerJournal] = weakref.WeakSet()


def settle_journals(timeout_s: float = 5.0) -> None:
    """Wait (up to `timeout_s` each) for every journal of this process to finish the answer it is
    writing, then keep the others from starting one: called before a signal ends the process."""
    for journal in list(_OPEN):
        journal._lock.acquire(timeout=timeout_s)  # never released: the process is ending


def request_key(model_id: str, conversation: Conversation, sampling: Sampling) -> str:
    """sha256 of (model, messages with images as pixel hashes, sampling)."""
    messages = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            content = [
                {"type": "image", "sha256": image_hash(p["image"])} if p.get("type") == "image" else p
                for p in content
            ]
        messages.append({**message, "content": content})
    blob = json.dumps(
        {"model": model_id, "messages": messages, "sampling": sampling.to_dict()},
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class AnswerJournal:
    """An append-only JSONL file of `{"key": ..., "texts": [...]}` lines, loaded into memory on open.

    `put` writes one whole line with a single O_APPEND write and fsyncs it before returning; the
    file is created with the first answer (a stage that got none leaves no file). Thread-safe.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._answers: dict[str, tuple[str, ...]] = {}
        self._lock = threading.RLock()  # re-entrant: a signal handler may settle it mid-append
        self._fd: int | None = None
        self.loaded = self._load()
        _OPEN.add(self)

    def _load(self) -> int:
        """Read the answers on disk; cut off a torn last line (a kill mid-write)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning(
                "%s: dropping a torn last line (%d bytes) left by a killed run", self.path, len(data) - end
            )
            with self.path.open("r+b") as fh:
                fh.truncate(end)
        for lineno, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                self._answers[str(entry["key"])] = tuple(str(t) for t in entry["texts"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s:%d: ignoring an unreadable journal line (%s)", self.path, lineno, exc)
        return len(self._answers)

    def get(self, key: str) -> tuple[str, ...] | None:
        return self._answers.get(key)

    def put(self, key: str, texts: Sequence[str]) -> None:
        """Append one answer, durable (fsync'd) when this returns.

        The line is written under the lock (once `write` returns it is in the kernel: a killed
        process cannot lose it), the fsync (against a machine crash) outside it, so answers that
        arrive together are each written at once and share their fsyncs."""
        texts = tuple(redact(t) for t in texts)
        line = (json.dumps({"key": key, "texts": list(texts)}, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if key in self._answers:
                return
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            self._answers[key] = texts
            fd = self._fd
        try:
            os.fsync(fd)
        except OSError:  # closed meanwhile by `close`, which ends the journal's use
            pass

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _takes_on_result(backend: ChatBackend) -> bool:
    try:
        return "on_result" in inspect.signature(backend.chat).parameters
    except (TypeError, ValueError):
        return False


class JournaledBackend(ChatBackend):
    """`backend` with every answer journaled as it arrives and replayed on a rerun (see the module).

    Counts what it did in `replayed` (answers from the journal) and `asked` (requests sent on).
    Other attributes (`batch_size`, `url`, `breaker`, `close`, ...) are the wrapped backend's.
    """

    def __init__(self, backend: ChatBackend, journal: AnswerJournal | str | os.PathLike):
        self.backend = backend
        self.journal = journal if isinstance(journal, AnswerJournal) else AnswerJournal(journal)
        self.model_id = backend.model_id
        self.replayed = 0
        self.asked = 0
        self._streams = _takes_on_result(backend)

    def __getattr__(self, name: str) -> Any:
        if name == "backend":  # not set yet (during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.backend, name)

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        return [list(r.texts) if r.ok else [r.text] for r in self.chat(conversations, sampling)]

    def chat(
        self, conversations: Sequence[Conversation], sampling: Sampling, on_result: OnResult | None = None
    ) -> list[ChatResult]:
        keys = [request_key(self.model_id, c, sampling) for c in conversations]
        results: list[ChatResult | None] = [None] * len(conversations)
        todo = []
        for i, key in enumerate(keys):
            texts = self.journal.get(key)
            if texts is None:
                todo.append(i)
                continue
            results[i] = ChatResult(texts=texts, cached=True)
            self.replayed += 1
            if on_result is not None:
                on_result(i, results[i])
        if not todo:
            return results  # type: ignore[return-value]
        self.asked += len(todo)

        def arrived(j: int, result: ChatResult) -> None:
            i = todo[j]
            if result.ok:
                self.journal.put(keys[i], result.texts)
            if on_result is not None:
                on_result(i, result)

        asked = [conversations[i] for i in todo]
        if self._streams:
            answers = self.backend.chat(asked, sampling, on_result=arrived)
        else:  # a backend that cannot report answers one by one: journal the batch when it returns
            answers = self.backend.chat(asked, sampling)
            for j, result in enumerate(answers):
                arrived(j, result)
        for i, result in zip(todo, answers, strict=True):
            results[i] = result
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self.journal.close()
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


def journaled(backend: ChatBackend, folder: str | os.PathLike, name: str = JOURNAL_NAME) -> JournaledBackend:
    """`backend` journaling into `folder/name` (already journaled backends are returned as they are)."""
    if isinstance(backend, JournaledBackend):
        return backend
    journal = AnswerJournal(Path(folder) / name)
    if journal.loaded:
        log.info("replaying %d journaled answers from %s", journal.loaded, journal.path)
    return JournaledBackend(backend, journal)
