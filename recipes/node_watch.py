"""Stop a run that joined a Ray cluster as soon as the cluster loses a node, naming the node.

`recipes/train.sh` starts this beside the trainer whenever RAY_ADDRESS is set (`make train` joining a
running cluster, and the Slurm script). Why: a lost node does not always end verl's run. In one of four
measured two-node runs (recipes/multinode.md), the driver still had not ended 600 s after the second
node was SIGKILLed, with the surviving rank left in a cluster that could never finish the step. And
when a whole host disappears (power, network), a surviving rank waits in its gloo/NCCL collective until
the process group's timeout: verl 0.9.1's engine workers create the group with `timeout_second=None`
(verl/workers/engine_workers.py:89), so torch's default applies (30 min for gloo, 10 min for NCCL) and
`actor_rollout_ref.nccl_timeout` is never read. Ray's own health check knows within seconds.

So this polls Ray's node table (`ray.nodes()`) every `--every` seconds. When a node that was alive
during the run is dead (any reason but an autoscaler removing an idle node, which held none of the
run's workers), it prints the node's id, address and Ray's reason, sends the trainer SIGTERM (SIGKILL
after `--grace` seconds) and exits 1. Ray then removes the job's actors everywhere, and rerunning the
same command resumes from the last complete checkpoint. It ends on its own when the trainer does.
`NODE_WATCH=0` turns it off.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable

#: Ray's NodeDeathInfo.Reason for a node the autoscaler drained because it was idle
#: (ray/core/generated/common_pb2: UNSPECIFIED 0, EXPECTED_TERMINATION 1, UNEXPECTED_TERMINATION 2,
#: AUTOSCALER_DRAIN_PREEMPTED 3, AUTOSCALER_DRAIN_IDLE 4).
DRAINED_IDLE = 4


def describe(node: dict) -> str:
    """`<node id> at <address> (<Ray's death reason>)`, as `python -m recipes.doctor --lost-nodes` says."""
    reason = " ".join(str(v) for k, v in node.items() if "Death" in k and v not in (None, "", 0)).strip()
    return f"{node.get('NodeID', '?')} at {node.get('NodeManagerAddress', '?')}" + (
        f" ({reason})" if reason else ""
    )


class NodeLoss:
    """Which nodes of the run were lost: a node counts once it has been seen alive by this watcher."""

    def __init__(self) -> None:
        self.seen_alive: set[str] = set()

    def update(self, nodes: Iterable[dict]) -> list[dict]:
        nodes = list(nodes)
        self.seen_alive |= {n["NodeID"] for n in nodes if n.get("Alive")}
        return [
            n
            for n in nodes
            if not n.get("Alive") and n["NodeID"] in self.seen_alive and n.get("DeathReason") != DRAINED_IDLE
        ]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(pid: int, grace: float, wait: Callable[[float], bool]) -> None:
    """SIGTERM, then SIGKILL if the trainer is still there after `grace` seconds."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    waited, step = 0.0, 0.5
    while alive(pid) and waited < grace:
        wait(step)
        waited += step
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def watch(
    nodes: Callable[[], list[dict]],
    pid: int,
    every: float = 2.0,
    grace: float = 30.0,
    out=sys.stderr,
    wait: Callable[[float], bool] | None = None,
) -> int:
    """Poll `nodes()` until the trainer `pid` ends (0) or a node of the run is lost (1, trainer stopped)."""
    wait = wait or threading.Event().wait
    loss = NodeLoss()
    first = True
    while alive(pid):
        lost = loss.update(nodes())
        if first:
            print(
                f"[node_watch] watching {len(loss.seen_alive)} Ray node(s) for the run (pid {pid})",
                file=out,
                flush=True,
            )
            first = False
        if lost:
            for node in lost:
                print(f"error: Ray node {describe(node)} was lost mid-run", file=out, flush=True)
            print(
                f"error: stopping the run (pid {pid}): its workers on the lost node are gone, and a surviving "
                "rank could wait in a collective for the process group's timeout (30 min for gloo). fix: bring "
                "the node back (or start with fewer NODES) and rerun the same command: verl resumes from the "
                "last complete checkpoint in trainer.default_local_dir",
                file=out,
                flush=True,
            )
            stop(pid, grace, wait)
            return 1
        wait(every)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.node_watch", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--address", default=os.environ.get("RAY_ADDRESS"), help="the cluster's GCS host:port"
    )
    parser.add_argument("--pid", type=int, required=True, help="the trainer to stop when a node is lost")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between looks at the node table")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL")
    args = parser.parse_args(argv)
    if not args.address:
        parser.error("--address (or RAY_ADDRESS) is needed")
    from recipes import launch

    os.environ.update(launch.ray_auth_env(args.address))  # the token mode the head uses, as the driver's
    import ray

    try:
        ray.init(address=args.address, log_to_driver=False, logging_level="ERROR", namespace="node_watch")
    except Exception as err:  # the run goes on unwatched: say so once, never stop it for this
        print(
            f"warning: node watch off: cannot reach the Ray cluster at {args.address}: {err}", file=sys.stderr
        )
        return 0
    try:
        return watch(ray.nodes, args.pid, args.every, args.grace)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
