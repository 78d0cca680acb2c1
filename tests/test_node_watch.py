"""recipes/node_watch.py: the run is stopped, naming the node, once the cluster loses a node it used; a
real trainer stand-in (a child process), the node table as `ray.nodes()` returns it. The real cluster
case (verl's trainer on two Ray nodes, one SIGKILLed) is tests/test_cluster_ray.py::test_3."""

from __future__ import annotations

import io
import signal
import subprocess
import sys

import pytest

from recipes import node_watch

HEAD = {"NodeID": "aa" * 28, "NodeManagerAddress": "192.0.2.1", "Alive": True}
WORKER = {"NodeID": "bb" * 28, "NodeManagerAddress": "192.0.2.2", "Alive": True}
LOST = {
    **WORKER,
    "Alive": False,
    "DeathReason": 2,
    "DeathReasonMessage": "health check failed due to missing too many heartbeats",
}


def tables(*steps: list[dict]):
    """`ray.nodes()` returning each table in turn, then the last one for ever."""
    seq = list(steps)

    def nodes() -> list[dict]:
        return seq.pop(0) if len(seq) > 1 else seq[0]

    return nodes


@pytest.fixture
def trainer():
    """A process that ignores nothing: SIGTERM ends it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def no_wait(_seconds: float) -> bool:
    return False


def test_a_lost_node_stops_the_trainer_and_is_named(trainer):
    out = io.StringIO()
    rc = node_watch.watch(
        tables([HEAD, WORKER], [HEAD, WORKER], [HEAD, LOST]), trainer.pid, out=out, wait=no_wait
    )
    assert rc == 1
    assert trainer.wait(timeout=30) == -signal.SIGTERM
    text = out.getvalue()
    assert f"Ray node {WORKER['NodeID']} at 192.0.2.2" in text and "missing too many heartbeats" in text
    assert "rerun the same command" in text


def test_sigkill_after_the_grace_when_sigterm_is_ignored():
    script = "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", script + "while True: time.sleep(1)"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"  # the handler is in place
        rc = node_watch.watch(
            tables([HEAD, WORKER], [HEAD, LOST]), proc.pid, every=0.1, grace=1.0, out=io.StringIO()
        )
        assert rc == 1
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    "table",
    [
        [HEAD, {**LOST, "DeathReason": node_watch.DRAINED_IDLE}],  # the autoscaler removed an idle node
        [HEAD],  # a node that left the table
    ],
)
def test_nodes_the_run_cannot_have_used_do_not_stop_it(trainer, table):
    seen = []

    def nodes():
        seen.append(1)
        if len(seen) > 3:
            trainer.terminate()  # the run ends on its own
            trainer.wait(timeout=30)
        return [HEAD, WORKER] if len(seen) == 1 else table

    assert node_watch.watch(nodes, trainer.pid, out=io.StringIO(), wait=no_wait) == 0


def test_a_node_dead_before_the_run_is_not_the_runs(trainer):
    """A cluster keeps dead nodes in its table (e.g. the one lost by the previous run)."""
    calls = []

    def nodes():
        calls.append(1)
        if len(calls) > 3:
            trainer.terminate()
            trainer.wait(timeout=30)
        return [HEAD, LOST]

    assert node_watch.watch(nodes, trainer.pid, out=io.StringIO(), wait=no_wait) == 0
