"""Two real Ray nodes on this machine (a head and a second raylet, token auth on, one "GPU" slot each)
run verl's trainer with trainer.nnodes=2 through both routes: a driver joining the cluster
(`RAY_ADDRESS=HOST:PORT make train NODES=2 GPUS=1`) and Ray job submission (`make submit`). Ray's own
state shows the trainer's ranks and the rollout servers on two distinct node ids; checkpoints,
metrics.jsonl and resume work as on one node; losing the second node mid-run ends the run with an
error naming it, a SIGKILL during a checkpoint save leaves the previous one, and each next run resumes
from the last complete checkpoint.

One run continues the previous one (one experiment, one checkpoint folder), so the five runs in order
are the scenario: train to 2, submit to 4 (resumed), lose a node after 6, kill during the save of 8,
finish at 10. Each run costs ~1.5 min of start-up on 2 cores; a test fails if an earlier one did.

Heavy (each run is verl's trainer: ~10 processes per node): `make test-cluster`, not `make test`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_nodes import (
    LocalRayCluster,
    PeakMemory,
    actors_by_class,
    poll,
    short_run,
    teardown_on_sigterm,
    token_auth,
)

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
#: verl's colocated trainer actor (actor + reference + rollout adapter), one per rank
#: (verl/single_controller/ray/base.py:1004), and the CPU rollout's server (recipes/verl_cpu/rollout.py).
TRAINER_CLASS = "WorkerDict"
ROLLOUT_CLASS = "HFRolloutServer"


def metric_steps(path: Path) -> list[int]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if "train/reward/score" in r.get("data", {})]


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, each `ray start --block` with its own ports; a token of our own
    (the test process and both nodes use token mode; the launchers get only the token file and must
    choose token mode themselves, as a user's shell with ~/.ray/auth_token would)."""
    from recipes import tiny_assets
    from recipes.launch import compose

    tmp = Path(tempfile.mkdtemp(prefix="c2ray", dir="/tmp"))  # short: Ray's socket paths are limited
    ray_cluster = LocalRayCluster(tmp)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(ray_cluster.token_file))
    with teardown_on_sigterm():
        try:
            ray_cluster.add_node()
            ray_cluster.add_node()
            tiny_assets.ensure(compose("imageedit_r1_tiny", short_run(tmp, "assets", 1)), progress=False)
            yield ray_cluster
        finally:
            ray_cluster.stop()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(tmp, ignore_errors=True)


def make(target: str, cluster: LocalRayCluster, address: str, overrides: list[str], metrics: Path, **popen):
    env = {
        **cluster.client_env(),
        "RAY_ADDRESS": address,
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(cluster.tmp),
        "VERL_FILE_LOGGER_PATH": str(metrics),
    }
    env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "DRY_RUN", "RECIPE", "ARGS")}
    command = [
        "make",
        "--no-print-directory",
        f"PYTHON={sys.executable}",
        target,
        "RECIPE=imageedit_r1_tiny",
        "NODES=2",
        "GPUS=1",
        "ARGS=" + " ".join(overrides),
    ]
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finish(proc: subprocess.Popen, timeout: int = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-8000:]
    return out


def new_actors(cluster: LocalRayCluster, before: dict) -> dict[str, set[str]]:
    """Node ids of the trainer and rollout actors created since `before`."""
    out: dict[str, set[str]] = {TRAINER_CLASS: set(), ROLLOUT_CLASS: set()}
    for actor_id, actor in actors_by_class(cluster).items():
        if actor_id in before:
            continue
        for cls in out:
            if actor["class"] and actor["class"].endswith(cls):
                out[cls].add(actor["node"])
    return out


def tracker_step(ckpt: Path) -> int | None:
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    text = tracker.read_text().strip() if tracker.exists() else ""
    return int(text) if text else None


def complete_step(ckpt: Path, step: int, ranks: int = 2) -> bool:
    """A checkpoint verl can load: every rank's model, optimizer and extra state, and the dataloader."""
    actor = ckpt / f"global_step_{step}" / "actor"
    names = [
        f"{kind}_world_size_{ranks}_rank_{r}.pt"
        for kind in ("model", "optim", "extra_state")
        for r in range(ranks)
    ]
    return all((actor / n).is_file() for n in names) and (ckpt / f"global_step_{step}" / "data.pt").is_file()


NAME = "two_nodes"
#: Seconds from the SIGKILL of a node to the run's end: Ray's health check marks the node dead within
#: about 30 s (measured 27-28 s), recipes/node_watch.py looks every 2 s and allows the trainer 30 s
#: from SIGTERM to SIGKILL; the rest is slack for a loaded 2-core machine.
LOST_NODE_BOUND = 240


def run_to(cluster: LocalRayCluster, target: str, steps: int, log: str, **popen) -> subprocess.Popen:
    address = cluster.url if target == "submit" else cluster.gcs
    return make(
        target, cluster, address, short_run(cluster.tmp, NAME, steps), cluster.tmp / f"{log}.jsonl", **popen
    )


def ckpt_of(cluster: LocalRayCluster) -> Path:
    return cluster.tmp / f"ckpt_{NAME}"


def test_1_make_train_joins_two_nodes_and_checkpoints(cluster):
    """The driver-joining route: FSDP ranks on both nodes (gloo over loopback), a rollout server on each,
    the preflight's probe on both, metrics and a checkpoint at step 2 sharded over both ranks."""
    node_ids = {n["node_id"] for n in cluster.alive_nodes()}
    assert len(node_ids) == 2
    before = actors_by_class(cluster)
    started = time.monotonic()
    with PeakMemory([n.pid for n in cluster.nodes]) as memory:
        run = run_to(cluster, "train", 2, "run1")
        memory.add(run.pid)
        out = finish(run)
    placed = new_actors(cluster, before)
    assert placed[TRAINER_CLASS] == node_ids, placed  # one FSDP rank per node
    assert placed[ROLLOUT_CLASS] == node_ids, placed  # each node serves its replica
    assert "# doctor: passed" in out and "OK    gpus: 2 node(s), 2 GPU(s)" in out
    assert "OK    cluster: 2 node(s)" in out  # the per-node probe ran on both
    assert metric_steps(cluster.tmp / "run1.jsonl") == [1, 2]
    assert tracker_step(ckpt_of(cluster)) == 2 and complete_step(ckpt_of(cluster), 2)  # both ranks' shards
    print(
        f"\n[run 1] make train NODES=2: {time.monotonic() - started:.0f} s for 2 steps, {memory}; nodes {sorted(n[:8] for n in node_ids)}"
    )


def test_2_make_submit_resumes_on_both_nodes(cluster):
    """The job-submission route, through the dashboard URL with the token the launcher found: the job
    resumes at step 3 from the first run's checkpoint, on both nodes."""
    from ray.job_submission import JobStatus, JobSubmissionClient, JobType

    node_ids = {n["node_id"] for n in cluster.alive_nodes()}
    before = actors_by_class(cluster)
    started = time.monotonic()
    out = finish(run_to(cluster, "submit", 4, "run2"))
    with token_auth(cluster):
        client = JobSubmissionClient(cluster.url)
        jobs = [
            j for j in client.list_jobs() if j.type == JobType.SUBMISSION and NAME in (j.entrypoint or "")
        ]
    assert len(jobs) == 1 and jobs[0].status == JobStatus.SUCCEEDED, out[-4000:]
    assert "OK    cluster: job's 2 node(s)" in out  # the probe job ran on both nodes
    placed = new_actors(cluster, before)
    assert placed[TRAINER_CLASS] == node_ids and placed[ROLLOUT_CLASS] == node_ids, placed
    assert metric_steps(cluster.tmp / "run2.jsonl") == [3, 4]  # resumed after step 2
    assert tracker_step(ckpt_of(cluster)) == 4
    print(f"\n[run 2] make submit NODES=2: resumed at 3, {time.monotonic() - started:.0f} s")


def test_3_losing_a_node_ends_the_run_naming_it(cluster):
    """SIGKILL of the second node's processes (raylet, agents, its trainer rank and rollout server) once
    step 6 is checkpointed: the run ends with an error naming the lost node within a bounded time, not a
    hang. Then a node comes back (a new raylet, a new node id)."""
    ckpt = ckpt_of(cluster)
    lost = next(n for n in cluster.alive_nodes() if not n["is_head_node"])
    run = run_to(cluster, "train", 10, "run3")
    try:
        poll(
            "the step-6 checkpoint", lambda: tracker_step(ckpt) == 6 or run.poll() is not None, 600, every=0.2
        )
        assert run.poll() is None, "the run ended before the node could be lost"
        killed_at = time.monotonic()
        cluster.kill_node(1)
        try:
            out, _ = run.communicate(timeout=LOST_NODE_BOUND)
        except subprocess.TimeoutExpired as err:  # what the run was doing when it should have ended
            tail = (err.output or b"")[-6000:].decode(errors="replace")
            raise AssertionError(
                f"no end {LOST_NODE_BOUND} s after the node loss; the run's last output:\n{tail}"
            ) from None
        to_error = time.monotonic() - killed_at
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    # named by recipes/node_watch.py ("... was lost mid-run", stopping the run) or, when the run ended on
    # its own first, by train.sh's `doctor --lost-nodes` ("... was lost")
    assert f"error: Ray node {lost['node_id']}" in out, out[-6000:]
    steps = metric_steps(cluster.tmp / "run3.jsonl")
    step = tracker_step(ckpt)
    assert step == 6 and complete_step(ckpt, 6)
    naming = [line[:300] for line in out.splitlines() if lost["node_id"][:8] in line]
    print(
        f"\n[run 3] node {lost['node_id'][:8]} lost: the run ended after {to_error:.0f} s; last logged step "
        f"{steps[-1] if steps else None}, last checkpoint {step}; folders {sorted(p.name for p in ckpt.iterdir())}; "
        f"the lines naming it: {naming[:3]}"
    )
    cluster.add_node()


def test_4_sigkill_during_a_checkpoint_save_keeps_the_previous_one(cluster):
    """The next run resumes at step 7 (from the last complete checkpoint) on the new node; every process
    of it (driver, trainer ranks, rollout servers, the TaskRunner) is SIGKILLed the moment the step-8 save
    starts (its folder appears). verl writes latest_checkpointed_iteration.txt only after every rank's
    files and data.pt (verl/trainer/ppo/v1/trainer_base.py:1010-1025), so it still names a complete
    checkpoint, and the last run resumes there and finishes."""
    ckpt = ckpt_of(cluster)
    before = actors_by_class(cluster)
    run = run_to(cluster, "train", 10, "run4", start_new_session=True)
    try:
        poll(
            "the step-8 save",
            lambda: (ckpt / "global_step_8").exists() or run.poll() is not None,
            600,
            every=0.005,
        )
        assert run.poll() is None, "the run ended before the save"
        from ray.util.state import list_actors

        with token_auth(cluster):
            actors = list_actors(address=cluster.url, limit=10000, detail=True, raise_on_missing_output=False)
        pids = [a.pid for a in actors if a.actor_id not in before and a.state == "ALIVE" and a.pid]
        os.killpg(os.getpgid(run.pid), 9)
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert metric_steps(cluster.tmp / "run4.jsonl")[0] == 7  # resumed from 6 after the node loss
    partial = not complete_step(ckpt, 8)
    step = tracker_step(ckpt)
    assert step in (6, 8) and complete_step(ckpt, step), sorted(
        str(p.relative_to(ckpt)) for p in ckpt.rglob("*")
    )
    assert not (partial and step == 8)  # the tracker never names a partial save
    left = sorted(str(p.relative_to(ckpt)) for p in (ckpt / "global_step_8").rglob("*"))
    print(
        f"\n[run 4] SIGKILL at the step-8 save: tracker {step}; step 8 {'partial' if partial else 'complete'}: {left}"
    )

    started = time.monotonic()
    out = finish(run_to(cluster, "train", 10, "run5"))
    assert "Training from scratch" not in out
    assert metric_steps(cluster.tmp / "run5.jsonl") == list(range(step + 1, 11))
    assert tracker_step(ckpt) == 10 and complete_step(ckpt, 10)
    print(f"\n[run 5] resumed at {step + 1}, finished step 10 in {time.monotonic() - started:.0f} s")


#: A driver that never notices a lost node: an actor placed on the second node, then a wait for ever (as
#: a rank waits in a collective on a host that vanished, which gloo notices only at its 30 min timeout).
STUCK_DRIVER = """
import os, sys, threading, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
@ray.remote(num_cpus=0)
class Held:
    def node(self):
        return ray.get_runtime_context().get_node_id()
held = Held.options(scheduling_strategy=NodeAffinitySchedulingStrategy(sys.argv[1], soft=False)).remote()
print("placed on", ray.get(held.node.remote()), flush=True)
threading.Event().wait()
"""


def test_6_node_watch_stops_a_run_that_would_wait_for_ever(cluster):
    """recipes/node_watch.py (which train.sh starts beside a trainer joined to a cluster) on real raylets:
    a stuck driver with an actor on the second node; that node SIGKILLed; the watch names the node, stops
    the driver and exits 1, within Ray's health check (about 30 s) plus its 2 s poll."""
    node = next(n for n in cluster.alive_nodes() if not n["is_head_node"])
    env = {**cluster.client_env(), "RAY_ADDRESS": cluster.gcs}
    stuck = subprocess.Popen(
        [sys.executable, "-c", STUCK_DRIVER, node["node_id"]],
        cwd=REPO,
        env={**env, "RAY_AUTH_MODE": "token"},  # the watch must find the mode itself, as train.sh's does
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    watch = None
    try:
        assert stuck.stdout.readline().strip() == f"placed on {node['node_id']}"
        watch = subprocess.Popen(
            [sys.executable, "-m", "recipes.node_watch", "--address", cluster.gcs, "--pid", str(stuck.pid)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        first = watch.stdout.readline()  # after its first look at the node table
        assert first.startswith("[node_watch] watching 2 Ray node(s)"), first
        killed_at = time.monotonic()
        cluster.kill_node(len(cluster.nodes) - 1)
        out, _ = watch.communicate(timeout=LOST_NODE_BOUND)
        to_end = time.monotonic() - killed_at
        assert watch.returncode == 1, out
        assert f"error: Ray node {node['node_id']}" in out and "was lost mid-run" in out, out
        # SIGTERM: ray.init installs a handler that exits with the signal number (ray/_private/worker.py:1675)
        assert stuck.wait(timeout=60) in (15, -15)
    finally:
        for proc in (stuck, watch):
            if proc is not None and proc.poll() is None:
                proc.kill()
    print(f"\n[watch] node {node['node_id'][:8]} SIGKILLed: the stuck driver stopped after {to_end:.0f} s")
    cluster.add_node()
