"""The Makefile's one-environment-per-machine rule, run for real in a scratch copy of the checkout's
Makefile: a `make setup-gpu` that stops half-way leaves its "building" stamp, and then no target
installs the CPU stack (requirements.txt) over the GPU one; each refusal names the fix. Nothing is
installed: the runs stop at the guards (a missing Python 3.12 stands in for any failure mid-setup)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed here")


@pytest.fixture
def checkout(tmp_path):
    for name in ("Makefile", "requirements.txt", "requirements-gpu.txt", "recipes/defaults.env"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path


def make(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL")
    }
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_failed_setup_gpu_is_never_overwritten_by_the_cpu_stack(checkout):
    failed = make(checkout, "setup-gpu", "GPU_BASE_PYTHON=/nonexistent/python3.12")
    assert failed.returncode == 2 and "Python 3.12" in failed.stderr and "GPU_BASE_PYTHON=" in failed.stderr
    assert (checkout / ".venv" / ".building-gpu").is_file()
    for target in ("doctor", "lint", "setup"):
        run = make(checkout, target)
        assert run.returncode == 2, (target, run.stdout, run.stderr)
        assert "did not finish" in run.stderr and "make setup-gpu" in run.stderr
    assert not (checkout / ".venv" / ".installed").exists()
    assert not (checkout / ".venv" / "bin").exists(), "something created an environment"
    # the CPU install's own guard, if reached another way (make's stamp target directly)
    direct = make(checkout, ".venv/.installed")
    assert direct.returncode == 2 and "GPU environment" in direct.stderr


def test_setup_gpu_refuses_what_it_did_not_make(checkout):
    venv = checkout / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(shutil.which("python3"))
    unknown = make(checkout, "setup-gpu")
    assert unknown.returncode == 2 and "rm -rf .venv" in unknown.stderr
    (venv / ".installed").touch()
    cpu = make(checkout, "setup-gpu")
    assert cpu.returncode == 2 and "CPU/dev environment" in cpu.stderr
    assert not (venv / ".building-gpu").exists()


def test_an_unknown_flash_attn_route_is_refused(checkout):
    run = make(checkout, "setup-gpu", "FLASH_ATTN=maybe")
    assert run.returncode == 2 and "wheel, none or build" in run.stderr


def test_the_containers_take_the_makefiles_flash_attn_wheel_and_requirements():
    """One flash-attn wheel for the three GPU routes (venv, Docker, Apptainer), and both images install
    requirements-gpu.txt on verl's image (they are built on no machine here: this is what can be checked)."""
    import re

    def wheel(path: Path, pattern: str) -> str:
        found = re.findall(pattern, path.read_text())
        assert len(found) == 1, (path, found)
        return found[0]

    ours = wheel(REPO / "Makefile", r"(?m)^FLASH_ATTN_WHEEL \?= (\S+)$")
    docker = REPO / "recipes/container/Dockerfile"
    apptainer = REPO / "recipes/container/imageedit-r1.def"
    assert wheel(docker, r"(?m)^ARG FLASH_ATTN_WHEEL=(\S+)$") == ours
    assert wheel(apptainer, r"(?m)^\s+FLASH_ATTN_WHEEL=(\S+)$") == ours
    assert "cp312" in ours and "torch2.11" in ours and "cu130" in ours
    base = wheel(docker, r"(?m)^ARG BASE_IMAGE=(\S+)$")
    assert wheel(apptainer, r"(?m)^From: (\S+)$") == base
    for image in (docker, apptainer):
        assert "-r /opt/imageedit-r1/requirements-gpu.txt" in image.read_text()


def test_make_test_sets_up_the_browser_test_first():
    """A fresh clone's `make test` (the README's test command) runs the `browser` target before pytest:
    Chromium is installed as `make setup` installs it, or one line says why the browser test skips."""
    run = make(REPO, "-n", "test", "PYTHON=python3")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    browser = next(i for i, line in enumerate(lines) if "chromedriver" in line)
    pytest_line = next(i for i, line in enumerate(lines) if "-m pytest" in line)
    assert browser < pytest_line
    assert "the browser test will skip" in run.stdout
