"""Real Ray nodes on this machine for the cluster tests: a head and more nodes, each a `ray start --block`
process of its own (its own ports, one "GPU" slot each for verl's CPU plugin), as on a hand-started
cluster; token auth on, with a token of the test's own. Stopped by signalling the process groups
started here, never `ray stop` (which would stop other people's Ray on this machine)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
#: Variables the launcher must bring itself: the shell that started the nodes has none of them.
LAUNCHER_ONLY = ("VERL_", "WANDB_", "HF_", "TRANSFORMERS_", "PYTHONPATH", "RAY_ADDRESS", "RAY_AUTH_MODE")


PROMPTS_PER_STEP = 2
#: recipes/demo.py's QUICK_BATCH (2 prompts x 4 rollouts) split over two trainer ranks: 4 sequences per
#: rank, so micro batches of 4 (verl asserts the rank's share divides into micro batches).
TWO_NODE_BATCH = [
    f"data.train_batch_size={PROMPTS_PER_STEP}",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
]


#: Training prompts of the short runs: 8 steps per epoch.
TRAIN_PROMPTS = 16


def short_run(root: Path, name: str, steps: int) -> list[str]:
    """The fewest steps of the tiny recipe (2 prompts x 4 rollouts), a checkpoint every 2 steps. verl's
    loop ends at trainer.total_epochs (the tiny recipe's is 1) even before trainer.total_training_steps
    (verl/trainer/ppo/v1/trainer_base.py:467, measured: a run to 10 stopped after step 8 with exit 0),
    so the epochs are as many as `steps` needs."""
    epochs = -(-steps * PROMPTS_PER_STEP // TRAIN_PROMPTS)
    return [
        f"assets.data.dir={root}/data",
        f"assets.model.dir={root}/vlm",
        f"assets.data.train={TRAIN_PROMPTS}",
        f"trainer.total_epochs={epochs}",
        "assets.data.val=4",
        f"trainer.default_local_dir={root}/ckpt_{name}",
        f"trainer.experiment_name={name}",
        f"trainer.total_training_steps={steps}",
        "trainer.save_freq=2",
        "trainer.test_freq=-1",
        "trainer.val_before_train=false",
        *TWO_NODE_BATCH,
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


def poll(what: str, ready: Callable[[], bool], timeout: float, every: float = 1.0) -> None:
    """Until `ready()` is true; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


@contextmanager
def teardown_on_sigterm() -> Iterator[None]:
    """SIGTERM (a CI job's timeout, `kill`) raises KeyboardInterrupt here, so pytest still runs the
    fixtures' teardown and stops the nodes and daemons they started; without it Python dies at once and
    leaves them running."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class LocalRayCluster:
    """Ray nodes on 127.0.0.1 under `tmp` (RAY_TMPDIR): node 0 is the head."""

    tmp: Path
    cpus_per_node: int = 8
    gpus_per_node: int = 1
    nodes: list[subprocess.Popen] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0

    def __post_init__(self) -> None:
        self.token_file = self.tmp / "auth_token"
        self.token_file.write_text(secrets.token_hex(16))
        self.token_file.chmod(0o600)
        self.gcs_port, self.dashboard_port = free_ports(2)

    @property
    def gcs(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def client_env(self) -> dict[str, str]:
        """What a user's shell has: the token file, and no RAY_AUTH_MODE (the launchers pick it)."""
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
        env.update(
            RAY_TMPDIR=str(self.tmp),
            RAY_AUTH_TOKEN_PATH=str(self.token_file),
            PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        )
        return env

    def node_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.client_env().items() if not k.startswith(LAUNCHER_ONLY)}
        env["RAY_AUTH_MODE"] = "token"  # as every node of a token cluster must be started
        return env

    def add_node(self) -> subprocess.Popen:
        index = len(self.nodes)
        alive = 0
        if index:
            with token_auth(self):
                alive = len(self.alive_nodes())
        agent_http, agent_grpc, metrics, runtime_env, manager, objects, client = free_ports(7)
        args = [
            str(VENV_BIN / "ray"),
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--node-manager-port={manager}",
            f"--object-manager-port={objects}",
            f"--num-cpus={self.cpus_per_node}",  # logical slots: verl's actors reserve one each
            f"--num-gpus={self.gpus_per_node}",  # verl counts GPU slots, one per trainer process
            "--disable-usage-stats",
        ]
        if index == 0:
            args += [
                "--head",
                f"--port={self.gcs_port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={client}",
            ]
        else:
            args.append(f"--address={self.gcs}")
        elsewhere = self.tmp / f"node{index}"  # the node's folder: not the checkout
        elsewhere.mkdir(exist_ok=True)
        proc = subprocess.Popen(
            args,
            env=self.node_env(),
            cwd=elsewhere,
            stdout=open(self.tmp / f"node{index}.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.nodes.append(proc)
        self.wait_alive(alive + 1, timeout=180)
        return proc

    def alive_nodes(self) -> list[dict]:
        """Ray's own view (GCS node table), through the state API with the token."""
        from ray.util.state import list_nodes

        return [n.__dict__ for n in list_nodes(address=self.url, limit=1000) if n.state == "ALIVE"]

    def wait_alive(self, count: int, timeout: float) -> None:
        def ready() -> bool:
            try:
                with token_auth(self):
                    return len(self.alive_nodes()) >= count
            except Exception:
                return False

        poll(f"{count} alive Ray node(s) at {self.gcs}", ready, timeout)

    def kill_node(self, index: int) -> None:
        """SIGKILL every process of a node (raylet, agents and its workers, which Ray puts in process
        groups of their own but in the node's session) at once, as when a machine is lost."""
        proc = self.nodes[index]
        kill_session(proc.pid)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                proc.terminate()  # `ray start --block` stops what it started on SIGTERM
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    pass
            kill_session(proc.pid)  # whatever of the node is left (a worker that outlived its raylet)


def session_pids(sid: int) -> list[int]:
    """The processes of session `sid` (a node started with start_new_session: sid = its pid)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
                pids.append(int(entry))
    return pids


def kill_session(sid: int, timeout: float = 30) -> None:
    """SIGKILL every process of session `sid` until none is left (a zombie child of ours is reaped by
    its Popen; one of another parent by that parent)."""

    def gone() -> bool:
        alive = [pid for pid in session_pids(sid) if not zombie(pid)]
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not alive

    poll(f"the processes of session {sid} gone", gone, timeout, every=0.2)


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class token_auth:
    """RAY_AUTH_MODE=token and the cluster's token file in this process (the state API reads them)."""

    def __init__(self, cluster: LocalRayCluster):
        self.cluster = cluster

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.cluster.token_file))
        return self

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def actors_by_class(cluster: LocalRayCluster) -> dict[str, dict]:
    """Every actor Ray knows (alive or dead), by id: class name, node id, state, job id."""
    from ray.util.state import list_actors

    with token_auth(cluster):
        actors = list_actors(address=cluster.url, limit=10000, detail=True, raise_on_missing_output=False)
    return {
        a.actor_id: {"class": a.class_name, "node": a.node_id, "state": a.state, "job": a.job_id}
        for a in actors
    }


class PeakMemory:
    """The peak of the summed PSS (and the RSS at that moment) of every process under `roots` (pids),
    sampled every half second from /proc/*/smaps_rollup in a thread: what a run costs the machine (PSS
    counts shared pages once)."""

    def __init__(self, roots: list[int]):
        import threading

        self.roots, self.peak_pss, self.rss_at_peak, self.procs = list(roots), 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def add(self, pid: int) -> None:
        self.roots.append(pid)

    def _tree(self) -> set[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
        seen, todo = set(), list(self.roots)
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo += children.get(pid, [])
        return seen

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            pss = rss = 0
            pids = self._tree()
            for pid in pids:
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1])
                        elif line.startswith("Rss:"):
                            rss += int(line.split()[1])
                except OSError:
                    continue
            if pss > self.peak_pss:
                self.peak_pss, self.rss_at_peak, self.procs = pss, rss, len(pids)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def __str__(self) -> str:
        gib = 1024 * 1024
        return f"peak PSS {self.peak_pss / gib:.1f} GiB (RSS {self.rss_at_peak / gib:.1f} GiB, {self.procs} processes)"
