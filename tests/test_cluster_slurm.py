"""A real Slurm on this machine (Debian's slurmctld + two slurmd on one host, munge) runs
`sbatch --nodes=2 recipes/slurm/train.slurm --recipe imageedit_r1_tiny ...` to completion, with its log
where the script says (the submit folder), and `scontrol requeue` mid-run makes the job start again and
resume from its last checkpoint, the step count continuing.

Needs root and apt-get (or slurm-wlm and munge installed): `make slurm` installs them, and
recipes/slurm/local_cluster.sh starts the daemons; without them the tests skip with the reason.
Heavy: `make test-cluster`, not `make test`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray_nodes import free_ports, poll, short_run, teardown_on_sigterm

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
LOCAL_SLURM = REPO / "recipes" / "slurm" / "local_cluster.sh"
SCRIPT = REPO / "recipes" / "slurm" / "train.slurm"
#: The script's `#SBATCH --job-name` and `--output=%x-%j.out` (in the submit folder).
JOB_NAME = "imageedit-r1-grpo"


def free_port_run(n: int) -> int:
    """A port P with P..P+n-1 all free (slurmd's port, then one per node of a multiple-slurmd host)."""
    for _ in range(100):
        (base,) = free_ports(1)
        if base + n < 65536 and all(port_is_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no run of {n} free ports")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def slurm():
    """munged (when none runs), slurmctld and two slurmd (node1, node2) on this host, in a private folder
    with ports of its own (a Slurm left by an earlier run, or the host's, cannot collide); torn down with
    every job process even when a test fails or the run is stopped (SIGTERM)."""
    tmp = Path(tempfile.mkdtemp(prefix="c2slurm", dir="/tmp"))
    (ctld,) = free_ports(1)
    env = {
        **os.environ,
        "LOCAL_SLURM_DIR": str(tmp / "slurm"),
        "LOCAL_SLURM_CTLD_PORT": str(ctld),
        "LOCAL_SLURM_SLURMD_PORT": str(free_port_run(3)),
    }
    down_env = dict(env)
    with teardown_on_sigterm():
        up = subprocess.run(
            ["bash", str(LOCAL_SLURM), "up", "--nodes", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if up.returncode == 3:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.skip(up.stderr.strip().splitlines()[-1])
        try:
            assert up.returncode == 0, up.stdout + up.stderr
            yield {"tmp": tmp, "env": job_env(tmp, env)}
        finally:
            down = subprocess.run(
                ["bash", str(LOCAL_SLURM), "down"], env=down_env, capture_output=True, text=True, timeout=300
            )
            print(f"\n[slurm teardown] {down.stdout.strip()} {down.stderr.strip()}")
            shutil.rmtree(tmp, ignore_errors=True)


def job_env(tmp: Path, env: dict[str, str]) -> dict[str, str]:
    """The tiny assets under `tmp`, a Ray token of our own, and the environment sbatch is given."""
    from recipes import tiny_assets
    from recipes.launch import compose

    tiny_assets.ensure(compose("imageedit_r1_tiny", short_run(tmp, "assets", 1)), progress=False)
    token = tmp / "auth_token"  # the script hands it to every node (RAY_AUTH_TOKEN)
    token.write_text(secrets.token_hex(16))
    env = {
        k: v
        for k, v in env.items()
        if not k.startswith(("RAY_", "VERL_", "SLURM_")) and k not in ("PYTHONPATH", "DRY_RUN", "RECIPE")
    }
    env.update(
        SLURM_CONF=str(tmp / "slurm" / "slurm.conf"),
        RAY_TMPDIR=str(tmp),
        RAY_AUTH_TOKEN_PATH=str(token),
        PYTHON=sys.executable,
        HF_HUB_OFFLINE="1",
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp),
    )
    return env


def sbatch(slurm: dict, name: str, steps: int) -> tuple[str, Path, Path]:
    """Submit from the checkout (the script's log goes to the submit folder); (job id, log, metrics)."""
    gcs, dashboard, client = free_ports(3)
    agent = free_port_run(2)  # node i's dashboard agent gets agent + i
    metrics = slurm["tmp"] / f"{name}.jsonl"
    out = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--nodes=2",
            "--gpus-per-node=0",  # no GPUs here: the script's Ray "GPU" slots come from --gpus-per-node
            "--cpus-per-task=2",
            str(SCRIPT),
            "--recipe",
            "imageedit_r1_tiny",
            "--gpus-per-node",
            "1",
            "--ray-cpus",
            "8",
            "--port",
            str(gcs),
            "--dashboard-port",
            str(dashboard),
            "--client-port",
            str(client),
            "--agent-port",
            str(agent),
            *short_run(slurm["tmp"], name, steps),
        ],
        cwd=REPO,
        env={**slurm["env"], "VERL_FILE_LOGGER_PATH": str(metrics)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job = out.stdout.strip().split(";")[0]
    return job, REPO / f"{JOB_NAME}-{job}.out", metrics


def job_state(slurm: dict, job: str) -> str:
    out = subprocess.run(
        ["scontrol", "show", "job", job], env=slurm["env"], capture_output=True, text=True, timeout=30
    )
    found = re.search(r"JobState=(\S+)", out.stdout)
    return found.group(1) if found else "UNKNOWN"


def wait_done(slurm: dict, job: str, log: Path, timeout: float = 900) -> str:
    done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    try:
        poll(f"job {job}", lambda: job_state(slurm, job) in done, timeout, every=2)
    except TimeoutError:
        subprocess.run(["scancel", job], env=slurm["env"], timeout=30)
        raise AssertionError(f"job {job} did not finish in {timeout:.0f} s:\n" + tail(log)) from None
    return job_state(slurm, job)


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else f"(no log at {log})"


def metric_steps(path: Path) -> list[int]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in rows if "train/reward/score" in r.get("data", {})]


def keep_log(slurm: dict, log: Path) -> None:
    """The log was where the script says; move it out of the checkout."""
    if log.exists():
        shutil.move(log, slurm["tmp"] / log.name)


def test_sbatch_two_nodes_runs_the_tiny_recipe_to_completion(slurm):
    started = time.monotonic()
    job, log, metrics = sbatch(slurm, "slurm_done", 2)
    try:
        state = wait_done(slurm, job, log)
        text = log.read_text(errors="replace")
        assert state == "COMPLETED", tail(log)
        assert "2 Ray node(s) joined" in text and "auth token" in text
        assert "OK    gpus: 2 node(s), 2 GPU(s)" in text
        assert metric_steps(metrics) == [1, 2]
        ckpt = slurm["tmp"] / "ckpt_slurm_done"
        assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
        assert len(list((ckpt / "global_step_2" / "actor").glob("model_world_size_2_rank_*.pt"))) == 2
        print(f"sbatch --nodes=2: job {job} COMPLETED in {time.monotonic() - started:.0f} s")
    finally:
        keep_log(slurm, log)


def test_scontrol_requeue_resumes_from_the_last_checkpoint(slurm):
    job, log, metrics = sbatch(slurm, "slurm_requeue", 4)
    ckpt = slurm["tmp"] / "ckpt_slurm_requeue"
    tracker = ckpt / "latest_checkpointed_iteration.txt"
    try:
        poll(
            "the checkpoint of step 2",
            lambda: tracker.exists() or job_state(slurm, job) not in ("PENDING", "RUNNING"),
            600,
        )
        assert tracker.exists(), tail(log)
        requeued_at = time.monotonic()
        subprocess.run(["scontrol", "requeue", job], env=slurm["env"], check=True, timeout=30)
        state = wait_done(slurm, job, log)
        text = log.read_text(errors="replace")
        assert state == "COMPLETED", tail(log)
        assert "restart 0" in text and "restart 1" in text, tail(log)  # both runs, one log (append)
        second = text[text.index("restart 1") :]
        assert (
            "Training from scratch" not in second and "Checkpoint tracker file does not exist" not in second
        )
        assert tracker.read_text().strip() == "4"
        from eval.curves import load_metrics  # each step once, as last run (a step redone after the requeue)

        steps = [m["step"] for m in load_metrics(metrics) if "train/reward/score" in m]
        assert steps == [1, 2, 3, 4], steps  # the count went on, and no step's metrics were lost
        print(
            f"scontrol requeue: job {job} resumed and COMPLETED {time.monotonic() - requeued_at:.0f} s later; "
            f"metrics steps {steps}"
        )
    finally:
        keep_log(slurm, log)
