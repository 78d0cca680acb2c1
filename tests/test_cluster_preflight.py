"""The multi-node parts of the launchers that need no cluster (fast; the real runs are in
tests/test_cluster_ray.py and tests/test_cluster_slurm.py under `make test-cluster`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from recipes import doctor, launch

REPO = Path(__file__).resolve().parents[1]
TINY = "imageedit_r1_tiny"


def test_a_cpu_recipe_takes_nodes_and_gpus_only_for_several_nodes():
    one = launch.plan(TINY, [], nodes=1, gpus=8, python="py")  # the Makefile's defaults
    assert (one.config.trainer.nnodes, one.config.trainer.n_gpus_per_node) == (1, 1)
    two = launch.plan(TINY, [], nodes=2, gpus=1, python="py")
    assert (two.config.trainer.nnodes, two.config.trainer.n_gpus_per_node) == (2, 1)
    assert two.command[7:9] == ["trainer.nnodes=2", "trainer.n_gpus_per_node=1"]


def test_token_mode_only_for_a_cluster_that_wants_it(tmp_path):
    """Token mode is chosen only when a token is at hand and the cluster refuses a client without one
    (a token-mode driver on a cluster without auth loses its actors); a mode the user set wins. The
    real clusters of tests/test_cluster_ray.py exercise the token side."""
    import http.server
    import threading

    token = tmp_path / "auth_token"

    class Dashboard(http.server.BaseHTTPRequestHandler):
        status = 401

        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(self.status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        env = {"RAY_AUTH_TOKEN_PATH": str(token)}
        assert launch.ray_auth_env(url, env) == {}  # no token at hand: nothing to say
        token.write_text("0123")
        assert launch.ray_auth_env(url, env) == {"RAY_AUTH_MODE": "token"}
        assert launch.ray_auth_env(url, {"RAY_AUTH_TOKEN": "0123"}) == {"RAY_AUTH_MODE": "token"}
        assert launch.ray_auth_env(url, {**env, "RAY_AUTH_MODE": "disabled"}) == {}  # the user's choice
        Dashboard.status = 200  # a cluster without auth
        assert launch.ray_auth_env(url, env) == {}
    finally:
        server.shutdown()


def test_interface_variables_reach_the_workers():
    env = {"GLOO_SOCKET_IFNAME": "eth1", "NCCL_SOCKET_IFNAME": "eth1", "PATH": "/usr/bin"}
    p = launch.plan(TINY, [], environ=env, python="py")
    assert p.env["GLOO_SOCKET_IFNAME"] == "eth1" and p.env["NCCL_SOCKET_IFNAME"] == "eth1"
    assert "++ray_kwargs.ray_init.runtime_env.env_vars.GLOO_SOCKET_IFNAME='eth1'" in p.overrides
    assert launch.runtime_env(environ=env)["env_vars"]["GLOO_SOCKET_IFNAME"] == "eth1"  # make submit


def test_the_doctor_warns_about_several_interfaces_unless_pinned():
    results = [
        ("10.0.0.1 (node aaaa)", {"interfaces": ["eth0", "ib0"]}),
        ("10.0.0.2", {"interfaces": ["eth0"]}),
    ]
    found = doctor.interface_warning(results, {})
    assert found is not None and found.status == "warn"
    assert "10.0.0.1 (node aaaa): eth0, ib0" in found.detail and "GLOO_SOCKET_IFNAME" in found.fix
    assert doctor.interface_warning(results, {"NCCL_SOCKET_IFNAME": "ib0"}) is None
    assert doctor.interface_warning([("n", {"interfaces": ["eth0"]})], {}) is None


def test_same_files_by_size_and_content(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 99 + b"y")
    assert doctor._fingerprint(str(a)) != doctor._fingerprint(str(b))
    assert doctor._fingerprint(str(tmp_path / "missing")) is None


def test_the_slurm_script_and_local_cluster_parse():
    for script in ("recipes/slurm/train.slurm", "recipes/slurm/local_cluster.sh"):
        subprocess.run(["bash", "-n", script], cwd=REPO, check=True)
    usage = subprocess.run(
        ["bash", "recipes/slurm/local_cluster.sh", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "up" in usage.stdout and "--nodes N" in usage.stdout
