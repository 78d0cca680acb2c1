"""A real Ray head on 127.0.0.1, started from another folder with an environment of its own (as a
hand-started or Slurm cluster is): `make submit` runs the tiny recipe there and its metrics land where
`eval curves` reads them (issue 12, defect 3); the preflight's worker probe finds the reward file,
replay buffer and environment only as the launcher passes them (defects 4 and 5); the Slurm join
wait sees the node (defect 10)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_nodes import free_ports

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
#: The fewest steps of the tiny recipe on verl's trainer: one step of 2 prompts x 2 rollouts, no validation.
SHORT_RUN = [
    "assets.data.train=16",
    "assets.data.val=4",
    "trainer.total_training_steps=1",
    "trainer.test_freq=-1",
    "trainer.save_freq=-1",
    "trainer.val_before_train=false",
    "data.train_batch_size=2",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
]
#: What the shell that started the head had not: the cluster's workers must get them from the launcher.
LAUNCHER_ONLY = ("VERL_", "WANDB_", "HF_", "TRANSFORMERS_", "PYTHONPATH", "RAY_ADDRESS")


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
    elsewhere = tmp / "elsewhere"  # the head's (and so its workers') folder: not the checkout
    elsewhere.mkdir()
    gcs, dashboard, client, agent_http, agent_grpc, metrics = free_ports(6)
    env = {**os.environ, "RAY_TMPDIR": str(tmp), "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}
    # Ray 2.60 turns token auth on for a new head whenever ~/.ray/auth_token exists (any earlier
    # ray.init on this machine writes one); this private head runs without it, for every client here.
    env["RAY_AUTH_MODE"] = "disabled"
    head_env = {k: v for k, v in env.items() if not k.startswith(LAUNCHER_ONLY)}
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
            "--num-cpus=16",  # logical slots: verl's actors reserve one each
            "--num-gpus=1",  # verl counts GPU slots, one per trainer process, on CPU too
            "--disable-usage-stats",
        ],
        env=head_env,
        cwd=elsewhere,
        stdout=open(tmp / "head.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_jobs_api(url, timeout=180)
        yield {"url": url, "gcs": f"127.0.0.1:{gcs}", "env": env, "tmp": tmp}
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


def test_make_submit_runs_the_tiny_recipe_and_writes_metrics_where_eval_curves_reads(ray_head, tmp_path):
    from eval.curves import load_metrics

    experiment = f"ray_submit_{os.getpid()}_{int(time.time())}"
    run_dir = REPO / "outputs" / "runs" / experiment  # the launcher's metrics path, read by eval curves
    overrides = [
        f"assets.data.dir={tmp_path / 'data'}",
        f"assets.model.dir={tmp_path / 'vlm'}",
        f"trainer.experiment_name={experiment}",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        *SHORT_RUN,
    ]
    env = {
        **ray_head["env"],
        "RAY_ADDRESS": ray_head["url"],
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DIR": str(tmp_path),
    }
    env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VERL_FILE_LOGGER_PATH", "DRY_RUN")}
    started = time.monotonic()
    try:
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
            timeout=600,
        )
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-6000:]
        assert "ray job submit --address " + ray_head["url"] in proc.stderr  # the launcher echoes its command
        assert "# doctor: passed" in proc.stderr

        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(ray_head["url"])
        jobs = [j for j in client.list_jobs() if j.entrypoint and experiment in j.entrypoint]
        assert len(jobs) == 1
        job = jobs[0]
        assert job.status == JobStatus.SUCCEEDED, client.get_job_logs(job.submission_id)[-4000:]
        assert (
            "verl.trainer.main_ppo" in job.entrypoint and "--config-name imageedit_r1_tiny" in job.entrypoint
        )
        env_vars = job.runtime_env["env_vars"]
        assert env_vars["WANDB_MODE"] == "offline"
        assert env_vars["VERL_FILE_LOGGER_PATH"] == str(run_dir / "metrics.jsonl")

        # what verl's file logger wrote, read the way `python -m eval curves` reads a run
        steps = [m for m in load_metrics(run_dir) if "train/reward/score" in m]
        assert [m["step"] for m in steps] == [1]
        print(f"make submit -> SUCCEEDED in {time.monotonic() - started:.0f} s")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def run_doctor(ray_head, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in ray_head["env"].items()
        if k not in ("PYTHONPATH", "VERL_FILE_LOGGER_PATH", "DRY_RUN")
    }
    env.update(RAY_ADDRESS=ray_head["gcs"], PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", "recipes.doctor", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_workers_of_a_cluster_started_elsewhere_find_the_files_and_the_environment(ray_head, tmp_path):
    """The preflight's probe runs in a worker on every node under the runtime_env verl builds; as the
    launcher plans it, the reward file, the replay buffer and the environment all arrive."""
    from recipes import doctor, launch

    p = launch.plan(
        "imageedit_r1_tiny", [f"assets.data.dir={tmp_path}"], environ={**os.environ, "WANDB_MODE": "offline"}
    )
    before = {k: v for k, v in os.environ.items()}
    try:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ["RAY_TMPDIR"] = str(ray_head["tmp"])
        found = doctor.check_cluster_paths(p, ray_head["gcs"])
        assert found.status == "ok", found.detail
        # the same recipe as launched before issue 12 (relative paths, no env in ray_init): the
        # workers sit in the head's folder and see nothing of ours
        bare = launch.compose("imageedit_r1_tiny", [f"assets.data.dir={tmp_path}"])
        old = launch.LaunchPlan("imageedit_r1_tiny", [], bare, [], dict(p.env))
        found = doctor.check_cluster_paths(old, ray_head["gcs"])
        assert found.status == "fail"
        assert "reward.custom_reward_function.path=reward_fns/imageedit_r1.py" in found.detail
        assert "elsewhere" in found.detail  # the worker's folder, named
        assert "VERL_FILE_LOGGER_PATH=None" in found.detail
    finally:
        os.environ.clear()
        os.environ.update(before)


def test_slurm_join_wait_sees_the_node(ray_head):
    out = run_doctor(ray_head, "--address", ray_head["gcs"], "--wait-nodes", "1", "--timeout", "60")
    assert out.returncode == 0 and "1 Ray node(s) joined" in out.stdout, out.stderr[-2000:]
    out = run_doctor(ray_head, "--address", ray_head["gcs"], "--wait-nodes", "2", "--timeout", "3")
    assert out.returncode == 2 and "only 1 of 2 Ray node(s) joined" in out.stderr, out.stderr[-2000:]


def test_preflight_on_a_gcs_address_counts_the_clusters_gpus(ray_head, tmp_path):
    """`RAY_ADDRESS=HEAD:6379 make train` (and the Slurm script) runs the whole preflight against the
    cluster: the GPU count connects to it first (ray.nodes() needs a connection)."""
    from recipes import doctor, launch

    p = launch.plan("imageedit_r1_tiny", [f"assets.data.dir={tmp_path}"])
    before = dict(os.environ)
    try:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ["RAY_TMPDIR"] = str(ray_head["tmp"])
        gpus = doctor.check_cluster_gpus(p.config, ray_head["gcs"])
        assert gpus.status == "ok" and "1 node(s), 1 GPU(s)" in gpus.detail, gpus.detail
        two = launch.plan("imageedit_r1_tiny", [f"assets.data.dir={tmp_path}", "trainer.n_gpus_per_node=2"])
        short = doctor.check_cluster_gpus(two.config, ray_head["gcs"])
        assert short.status == "fail" and "has 1 node(s) and 1 GPU(s)" in short.detail
    finally:
        os.environ.clear()
        os.environ.update(before)


def test_train_sh_joined_to_a_cluster_ends_with_the_trainer_and_its_code(ray_head, tmp_path):
    """`RAY_ADDRESS=HEAD:6379 bash recipes/train.sh` starts recipes/node_watch.py beside the trainer; a
    trainer that fails at once (an override verl's config does not have) ends the script with its exit
    code, the watch gone with it (none left to hang the job), and no node named as lost."""
    env = {**ray_head["env"], "RAY_ADDRESS": ray_head["gcs"], "PYTHONPATH": str(REPO)}
    env.pop("DRY_RUN", None)
    proc = subprocess.run(
        ["bash", str(REPO / "recipes" / "train.sh"), "no_such_key=1"],
        cwd=REPO,
        env={**env, "RECIPE": "imageedit_r1_tiny", "NODES": "1", "GPUS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "does not compose" in out and "was lost" not in out, out[-3000:]
    left = subprocess.run(
        ["pgrep", "-f", f"recipes.node_watch --address {ray_head['gcs']}"], capture_output=True
    )
    assert left.returncode == 1, left.stdout  # no watch left running
