"""`make submit` against a real Ray head started here on 127.0.0.1: a short CPU GRPO run of the tiny
recipe goes through `ray job submit` with our runtime_env and finishes SUCCEEDED."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: A handful of steps on a 32-item synthetic set: the whole CPU path (data, tiny model, SFT, GRPO).
SHORT_RUN = [
    "cpu.data.train=16",
    "cpu.data.val=4",
    "cpu.sft.steps=2",
    "cpu.sft.batch_size=8",
    "cpu.sft.warmup_steps=1",
    "trainer.total_training_steps=2",
    "data.train_batch_size=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.rollout.n=4",
    "cpu.eval_items=2",
    "cpu.eval_every=2",
]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_jobs_api(url: str, timeout: float) -> None:
    """Until the head's job API answers (through Ray's own client, which also carries the auth token
    that Ray 2.60 enables by default when ~/.ray/auth_token exists)."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    while True:
        try:
            JobSubmissionClient(url).list_jobs()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head of our own: its own temp dir (so no other process on this machine finds it through
    /tmp/ray) and its own ports; stopped by signalling the process group we started, never `ray stop`."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="c1ray", dir="/tmp"))
    gcs, dashboard, client, agent_http, agent_grpc, metrics = free_ports(6)
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    # Ray 2.60 turns token auth on for a new head whenever ~/.ray/auth_token exists (any earlier
    # ray.init on this machine writes one); this private head runs without it, for every client here.
    env["RAY_AUTH_MODE"] = "disabled"
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            "--num-cpus=2",
            "--num-gpus=0",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=open(tmp / "head.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_jobs_api(url, timeout=180)
        yield {"url": url, "env": env, "tmp": tmp}
    finally:
        pgid = os.getpgid(head.pid)
        head.terminate()  # `ray start --block` stops the processes it started on SIGTERM
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # whatever of our own process group is left
        except ProcessLookupError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


def test_make_submit_runs_the_tiny_cpu_recipe_to_success(ray_head, tmp_path):
    if not (REPO / "recipes" / "cpu_grpo.py").exists():
        pytest.skip("the CPU GRPO trainer (recipes/cpu_grpo.py) has not landed yet")
    out_dir, data_dir, model_dir = tmp_path / "run", tmp_path / "data", tmp_path / "vlm"
    overrides = [
        f"cpu.out_dir={out_dir}",
        f"cpu.data.dir={data_dir}",
        f"cpu.model.dir={model_dir}",
        *SHORT_RUN,
    ]
    env = {
        **ray_head["env"],
        "RAY_ADDRESS": ray_head["url"],
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    env.pop("PYTHONPATH", None)  # the Makefile sets it; the job gets the uploaded checkout
    started = time.monotonic()
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.installed",  # never reinstall from a test
            "submit",
            "RECIPE=imageedit_r1_tiny",
            "ARGS=" + " ".join(overrides),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "ray job submit --address " + ray_head["url"] in proc.stderr  # the launcher echoes its command
    assert "succeeded" in log.lower(), log[-4000:]

    # The job's own record, from the cluster: SUCCEEDED, running the CPU trainer with our overrides.
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_head["url"])
    jobs = [j for j in client.list_jobs() if j.entrypoint and "recipes.cpu_grpo" in j.entrypoint]
    assert len(jobs) == 1
    job = jobs[0]
    assert job.status == JobStatus.SUCCEEDED, client.get_job_logs(job.submission_id)[-4000:]
    assert (
        "--config-name imageedit_r1_tiny" in job.entrypoint
        and "trainer.total_training_steps=2" in job.entrypoint
    )
    assert job.runtime_env["env_vars"]["WANDB_MODE"] == "offline"

    # What the run wrote: per-step training rewards and a saved policy.
    lines = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [m for m in lines if "train/reward/score" in m]
    assert [m["step"] for m in steps] == [1, 2]
    print(f"make submit -> SUCCEEDED in {time.monotonic() - started:.0f} s")
