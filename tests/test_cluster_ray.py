"""Two real Ray nodes on this machine (a head and a second raylet, token auth on, one "GPU" slot each)
run verl's trainer with trainer.nnodes=2 through both routes: a driver joining the cluster
(`RAY_ADDRESS=HOST:PORT make train NODES=2 GPUS=1`) and Ray job submission (`make submit`). Ray's own
state shows the trainer's ranks and the rollout servers on two distinct node ids; checkpoints,
metrics.jsonl and resume work as on one node; losing the second node mid-run ends the run with an
error naming it, and the next run resumes from the last complete checkpoint.

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
from ray_nodes import TWO_NODE_BATCH, LocalRayCluster, PeakMemory, actors_by_class, poll, token_auth

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
#: verl's colocated trainer actor (actor + reference + rollout adapter), one per rank
#: (verl/single_controller/ray/base.py:1004), and the CPU rollout's server (recipes/verl_cpu/rollout.py).
TRAINER_CLASS = "WorkerDict"
ROLLOUT_CLASS = "HFRolloutServer"


def short_run(root: Path, name: str, steps: int) -> list[str]:
    """The fewest steps of the tiny recipe (2 prompts x 4 rollouts), a checkpoint every 2 steps."""
    return [
        f"assets.data.dir={root}/data",
        f"assets.model.dir={root}/vlm",
        "assets.data.train=16",
        "assets.data.val=4",
        f"trainer.default_local_dir={root}/ckpt_{name}",
        f"trainer.experiment_name={name}",
        f"trainer.total_training_steps={steps}",
        "trainer.save_freq=2",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
        *TWO_NODE_BATCH,
    ]


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


def test_make_train_joins_two_nodes_checkpoints_and_resumes(cluster):
    """The driver-joining route: FSDP ranks on both nodes (gloo over loopback), a rollout server on each,
    a checkpoint at step 2, then a second run resumes at step 3."""
    root = cluster.tmp
    node_ids = {n["node_id"] for n in cluster.alive_nodes()}
    assert len(node_ids) == 2
    before = actors_by_class(cluster)
    started = time.monotonic()
    with PeakMemory([n.pid for n in cluster.nodes]) as memory:
        run = make("train", cluster, cluster.gcs, short_run(root, "joined", 2), root / "joined.jsonl")
        memory.add(run.pid)
        out = finish(run)
    first_s = time.monotonic() - started
    placed = new_actors(cluster, before)
    assert placed[TRAINER_CLASS] == node_ids, placed  # one FSDP rank per node
    assert placed[ROLLOUT_CLASS] == node_ids, placed  # each node serves its replica
    assert "# doctor: passed" in out and "OK    gpus: 2 node(s), 2 GPU(s)" in out
    assert "OK    cluster: 2 node(s)" in out  # the per-node probe ran on both
    assert metric_steps(root / "joined.jsonl") == [1, 2]
    ckpt = root / "ckpt_joined"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert sorted(
        p.name for p in (ckpt / "global_step_2" / "actor").glob("model_world_size_2_rank_*.pt")
    ) == [
        "model_world_size_2_rank_0.pt",
        "model_world_size_2_rank_1.pt",
    ]  # FSDP sharded over the two nodes' ranks

    started = time.monotonic()
    out = finish(make("train", cluster, cluster.gcs, short_run(root, "joined", 3), root / "joined.jsonl"))
    assert "Training from scratch" not in out
    assert metric_steps(root / "joined.jsonl")[-1] == 3
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
    print(
        f"NODES=2 make train: {first_s:.0f} s for 2 steps, {memory}; resume to 3: {time.monotonic() - started:.0f} s"
    )


def test_make_submit_runs_on_both_nodes(cluster):
    """The job-submission route, through the dashboard URL with the token the launcher found."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    root = cluster.tmp
    node_ids = {n["node_id"] for n in cluster.alive_nodes()}
    before = actors_by_class(cluster)
    out = finish(
        make("submit", cluster, cluster.url, short_run(root, "submitted", 2), root / "submitted.jsonl")
    )
    with token_auth(cluster):
        client = JobSubmissionClient(cluster.url)
        jobs = [j for j in client.list_jobs() if j.entrypoint and "submitted" in j.entrypoint]
    assert len(jobs) == 1 and jobs[0].status == JobStatus.SUCCEEDED, out[-4000:]
    placed = new_actors(cluster, before)
    assert placed[TRAINER_CLASS] == node_ids and placed[ROLLOUT_CLASS] == node_ids, placed
    assert metric_steps(root / "submitted.jsonl") == [1, 2]
    assert (root / "ckpt_submitted" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"


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


def test_losing_a_node_ends_the_run_naming_it_and_the_next_run_resumes(cluster):
    """SIGKILL of the second node's processes (raylet, agents, its trainer rank and rollout server) after
    the step-2 checkpoint: the run ends with an error naming the lost node within a bounded time, not a
    hang; once a node is back, the same command resumes from step 2."""
    root = cluster.tmp
    ckpt = root / "ckpt_lost"
    lost = next(n for n in cluster.alive_nodes() if not n["is_head_node"])
    run = make("train", cluster, cluster.gcs, short_run(root, "lost", 8), root / "lost.jsonl")
    try:
        poll(
            "the step-2 checkpoint", lambda: tracker_step(ckpt) == 2 or run.poll() is not None, 600, every=0.2
        )
        assert run.poll() is None, "the run ended before the node could be lost"
        killed_at = time.monotonic()
        cluster.kill_node(1)
        out, _ = run.communicate(timeout=600)
        to_error = time.monotonic() - killed_at
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode != 0
    assert lost["node_id"] in out or lost["node_id"][:8] in out, out[-6000:]
    steps = metric_steps(root / "lost.jsonl")
    left = sorted(p.name for p in ckpt.iterdir())
    print(
        f"node {lost['node_id'][:8]} lost: error after {to_error:.0f} s; last logged step {steps[-1]}, "
        f"last checkpoint {tracker_step(ckpt)} ({steps[-1] - tracker_step(ckpt)} step(s) to redo); files {left}"
    )
    assert complete_step(ckpt, tracker_step(ckpt))

    cluster.add_node()  # the node comes back (a new raylet, a new node id)
    out = finish(make("train", cluster, cluster.gcs, short_run(root, "lost", 4), root / "lost_resumed.jsonl"))
    assert "Training from scratch" not in out
    assert metric_steps(root / "lost_resumed.jsonl")[0] == 3  # resumed after step 2
    assert tracker_step(ckpt) == 4


def test_sigkill_during_a_checkpoint_save_leaves_the_previous_one(cluster):
    """Every process of the run (driver, trainer ranks, rollout servers) SIGKILLed the moment the step-4
    save starts (its folder appears): verl writes latest_checkpointed_iteration.txt only after every
    rank's files and data.pt (verl/trainer/ppo/v1/trainer_base.py:1010-1025), so it still names step 2,
    which is complete, and the next run resumes there."""
    root = cluster.tmp
    ckpt = root / "ckpt_killed"
    before = actors_by_class(cluster)
    run = make(
        "train",
        cluster,
        cluster.gcs,
        short_run(root, "killed", 6),
        root / "killed.jsonl",
        start_new_session=True,
    )
    try:
        poll(
            "the step-2 checkpoint", lambda: tracker_step(ckpt) == 2 or run.poll() is not None, 600, every=0.2
        )
        poll(
            "the step-4 save",
            lambda: (ckpt / "global_step_4").exists() or run.poll() is not None,
            300,
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
    mid_save = not complete_step(ckpt, 4)
    step = tracker_step(ckpt)
    assert step in (2, 4) and complete_step(ckpt, step), sorted(p.name for p in ckpt.rglob("*"))
    print(
        f"SIGKILL at the step-4 save: tracker says {step}; step 4 {'partial' if mid_save else 'complete'} "
        f"({sorted(p.name for p in (ckpt / 'global_step_4').rglob('*'))})"
    )
    out = finish(
        make("train", cluster, cluster.gcs, short_run(root, "killed", 6), root / "killed_resumed.jsonl")
    )
    assert "Training from scratch" not in out
    assert metric_steps(root / "killed_resumed.jsonl")[0] == step + 1
    assert tracker_step(ckpt) == 6
