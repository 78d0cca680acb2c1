"""verl's `file` logger, appending: a resumed run keeps every earlier step in its metrics.jsonl.

verl 0.9.1's `FileLogger` opens `VERL_FILE_LOGGER_PATH` with "wb" (`verl/utils/tracking.py:541`), so the
run that resumes from a checkpoint (`trainer.resume_mode=auto`) truncates the history of the attempts
before it. verl has no registry for loggers: `Tracking.__init__` builds the `file` backend by the module
name `FileLogger` (`tracking.py:186`). Importing this module puts a subclass under that name, in every
process that imports verl, through verl's own hook for external modules:

    VERL_USE_EXTERNAL_MODULES=recipes.metrics_log python -m verl.trainer.main_ppo ...

(`verl/__init__.py:49-52`; `recipes.launch.worker_env` sets it for every recipe, GPU and CPU, and hands it
to the Ray workers, where verl's TaskRunner builds its Tracking). The subclass

- opens the file for appending, after dropping a torn last line a killed attempt may have left;
- writes verl's record ({"step", "data"}) plus the attempt it came from (`eval.curves.ATTEMPT_KEY`), so
  `eval.curves.load_metrics` lets a later attempt's step replace an earlier attempt's (a crash after
  step 5 with the checkpoint at step 4 logs step 5 twice; the resumed attempt's wins).

It checks first that verl's code is what it was written against, and fails loudly on another version.
"""

from __future__ import annotations

import inspect
import os
import socket
import time

import orjson
import verl
from verl.utils import tracking

from eval.curves import ATTEMPT_KEY

VERL_VERSION = "0.9.1"
#: What verl's FileLogger.__init__ does that this module works around (verl/utils/tracking.py:541).
_TRUNCATING_OPEN = 'open(self.filepath, "wb", buffering=0)'


class VerlVersionError(RuntimeError):
    """verl's FileLogger differs from what this module was written against."""


def attempt_id() -> str:
    """This process's attempt: UTC start time, host and pid (unique and sortable by start)."""
    return f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}/{socket.gethostname()}/{os.getpid()}"


def drop_torn_tail(path: str) -> int:
    """Cut a last line without its newline (a writer killed mid-line); the bytes dropped."""
    try:
        with open(path, "rb+") as fp:
            size = fp.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            fp.seek(size - 1)
            if fp.read(1) == b"\n":
                return 0
            # the end of the last complete line: scan back in blocks
            end, block = size, 65536
            while end > 0:
                start = max(0, end - block)
                fp.seek(start)
                chunk = fp.read(end - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    keep = start + newline + 1
                    break
                end = start
            else:
                keep = 0
            fp.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0


class AppendingFileLogger(tracking.FileLogger):
    """verl's FileLogger with the same file rule, opened for appending, each record naming its attempt."""

    def __init__(self, project_name: str, experiment_name: str):
        # verl's own path rule (tracking.py:534-540), then "ab" where verl opens with "wb"
        self.project_name = project_name
        self.experiment_name = experiment_name
        self.filepath = os.getenv("VERL_FILE_LOGGER_PATH", None)
        if self.filepath is None:
            root_path = os.path.expanduser(os.getenv("VERL_FILE_LOGGER_ROOT", "."))
            directory = os.path.join(root_path, self.project_name)
            os.makedirs(directory, exist_ok=True)
            self.filepath = os.path.join(directory, f"{self.experiment_name}.jsonl")
        self.attempt = attempt_id()
        torn = drop_torn_tail(self.filepath)
        note = f" (dropped a torn last line of {torn} bytes)" if torn else ""
        print(f"Appending file logger at {os.path.abspath(self.filepath)}, attempt {self.attempt}{note}")
        self.fp = open(self.filepath, "ab", buffering=0)

    def log(self, data, step):
        record = {"step": step, "data": data, ATTEMPT_KEY: self.attempt}
        self.fp.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def install() -> None:
    """Make verl's Tracking build the appending logger (idempotent; version-checked)."""
    current = tracking.FileLogger
    if current is AppendingFileLogger:
        return
    if verl.__version__ != VERL_VERSION or _TRUNCATING_OPEN not in inspect.getsource(current.__init__):
        raise VerlVersionError(
            f"{__name__} was written against verl {VERL_VERSION}'s FileLogger (verl/utils/tracking.py:541 "
            f"opens with {_TRUNCATING_OPEN!r}); this is verl {verl.__version__}. Check whether it still "
            f"truncates a resumed run's metrics, then update {__file__}."
        )
    tracking.FileLogger = AppendingFileLogger


install()
