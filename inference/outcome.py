"""Exit codes that tell the truth, shared by the command lines of data_prep, inference and eval.

A stage that keeps nothing, or loses more than `--max-loss` of what it saw (default: half), exits
1 with one summary line naming the top reasons; an error is one clear line on stderr, exit 2 (the
traceback with `--debug`); a dead server (`inference.http_client.ServerDown`) is one line too,
exit 2. SIGTERM and Ctrl-C stop the run: no new request is sent (`inference.http_client.STOP`),
what has arrived is already journaled (`inference.journal`), and the command exits 128 + the
signal number (143, 130) with one line saying a rerun resumes. Success exits 0. Each package's
`main(argv)` returns the code and raises on errors (callers in Python see the exception); its
`cli(argv)`, what `python -m` runs, turns the exception into the line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

#: Default largest fraction of items a stage may lose and still exit 0.
DEFAULT_MAX_LOSS = 0.5
EXIT_OK, EXIT_LOSSY, EXIT_ERROR = 0, 1, 2


def add_outcome_flags(parser: argparse.ArgumentParser, losses: bool = True) -> None:
    """`--debug` on a (sub)command parser, and `--max-loss` on one that can lose items (`losses`)."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    if not losses:
        return
    parser.add_argument(
        "--max-loss",
        type=float,
        default=DEFAULT_MAX_LOSS,
        help=f"exit 1 when more than this fraction of items is lost (default {DEFAULT_MAX_LOSS}); 1 fails only when nothing is kept",
    )


def top_reasons(reasons: Mapping[str, int], k: int = 3) -> str:
    """`reason=count, ...` of the `k` most frequent reasons."""
    ranked = sorted(((n, r) for r, n in reasons.items() if n), key=lambda t: (-t[0], t[1]))[:k]
    return ", ".join(f"{r}={n}" for n, r in ranked) or "none"


def verdict(stage: str, seen: int, kept: int, reasons: Mapping[str, int], max_loss: float) -> int:
    """Print a summary line when the stage lost too much; return the exit code."""
    if not 0.0 <= max_loss <= 1.0:
        raise ValueError(f"--max-loss must be between 0 and 1, got {max_loss}")
    lost = seen - kept
    if seen and kept and lost / seen <= max_loss:
        return EXIT_OK
    why = "kept nothing" if not kept else f"lost {lost / seen:.0%} > --max-loss {max_loss:.0%}"
    print(
        f"{stage}: FAILED: {why}: kept {kept} of {seen}; top reasons: {top_reasons(reasons)}", file=sys.stderr
    )
    return EXIT_LOSSY


def run_cli(
    prog: str, main: Callable[[list[str]], int], argv: Sequence[str] | None = None, subcommands: bool = False
) -> int:
    """Run a command's `main(argv)` as a command line (argv: `sys.argv[1:]` when None): an exception
    becomes one line `prog [SUBCOMMAND]: error: ...` and exit 2, unless --debug. (`main` itself raises,
    as a library function should.)"""
    from inference.http_client import STOP, ServerDown

    command_line = argv is None  # this process is the command: signals end it (tests pass argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if subcommands:
        prog = f"{prog} {next((a for a in argv if not a.startswith('-')), '')}".strip()
    STOP.clear()  # a new run (tests call several in one process)
    previous = {}
    if command_line:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = _install(signum, lambda n, _f: _stop_now(prog, n))
    try:
        return main(argv)
    except KeyboardInterrupt:  # in process (a caller's Ctrl-C): stop the threads, say so
        STOP.set()
        print(f"{prog}: {_STOPPED.format(name='SIGINT')}", file=sys.stderr)
        return 128 + signal.SIGINT
    except SystemExit:
        raise
    except ServerDown as exc:
        print(f"{prog}: stopped: {exc}", file=sys.stderr)
        if command_line:  # leave now: a request still in flight to the dead server may hang
            _exit_now(EXIT_ERROR)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the user gets one clear line; --debug the traceback
        if "--debug" in argv:
            raise
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for signum, handler in previous.items():
            _install(signum, handler)


_STOPPED = "stopped by {name}: every answer received is kept; rerun the same command to go on"


def _stop_now(prog: str, signum: int) -> None:
    """SIGTERM / Ctrl-C of a command line: send nothing more, let the answer journals finish the
    line they are writing, say so in one line, exit 128 + signum at once. Requests still in flight
    are dropped (waiting for them could take a whole timeout); every answer that arrived is in a
    journal, and every output file is written atomically, so nothing half-written is left."""
    from inference.http_client import STOP

    STOP.set()
    print(f"{prog}: {_STOPPED.format(name=signal.Signals(signum).name)}", file=sys.stderr)
    _exit_now(128 + signum)


def _exit_now(code: int) -> None:
    """End the process without waiting for worker threads (requests in flight), once the answer
    journals have finished the line they are writing and the output streams are flushed."""
    from inference.http_client import STOP
    from inference.journal import settle_journals

    STOP.set()
    settle_journals(timeout_s=5.0)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _install(signum: int, handler):
    """Set a signal handler where Python allows it (the main thread); returns the previous one."""
    try:
        return signal.signal(signum, handler)
    except (ValueError, TypeError):  # not the main thread, or no previous Python handler
        return None


def setup_logging(
    debug: bool, level: int = logging.INFO, fmt: str = "%(levelname)s %(name)s: %(message)s"
) -> None:
    """A command line's logging: `level` (DEBUG with --debug); per-request HTTP lines only with --debug."""
    logging.basicConfig(level=logging.DEBUG if debug else level, format=fmt)
    quiet_http_logs(debug)


def quiet_http_logs(debug: bool) -> None:
    """Per-request HTTP logs (httpx's INFO lines) only with --debug."""
    level = logging.DEBUG if debug else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(level)
