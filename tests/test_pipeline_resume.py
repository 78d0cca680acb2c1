"""A batch run killed midway (a real subprocess, SIGKILL) and rerun completes with no duplicate and
no missing item, and does not redo finished items."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from inference.pipeline import read_traces
from inference.records import read_records
from inference.synthetic_items import write_synthetic_eval_set

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 12


def test_a_killed_batch_run_resumes_with_no_duplicate_and_no_missing_item(tiny_flux_dir, tmp_path):
    data = write_synthetic_eval_set(tmp_path / "data", N_ITEMS, seed=1, max_edits=3)
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "inference", "--records", str(data), "--out", str(out), "--mode", "single",
        "--editor", "flux_kontext", "--editor-model", str(tiny_flux_dir), "--editor-opt", "resolution=input",
        "--editor-opt", "num_inference_steps=2", "--editor-opt", "max_sequence_length=64", "--decomposer", "ground_truth", "--sequencer", "ground_truth",
        "--batch-size", "2", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    run_dir = out / "single"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(run_dir.glob("*.json"))) >= 3:
            break
        time.sleep(0.02)
    finished_early = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert not finished_early, f"the run ended before it could be killed: {stderr.decode()[-2000:]}"
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.json")}
    assert 3 <= len(before) < N_ITEMS, f"the kill should land midway, found {len(before)} traces"

    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == len(before) and summary["done"] == N_ITEMS - len(before)
    assert summary["failed"] == 0
    ids = sorted(r.id for r in read_records(data))
    traces = list(read_traces(run_dir))
    assert sorted(t["id"] for t in traces) == ids  # each id exactly once
    assert sorted(p.stem for p in run_dir.glob("*.png")) == ids
    assert not list(run_dir.glob(".*"))  # no temp files left
    assert all((run_dir / name).read_bytes() == b for name, b in before.items())  # done items not redone
    assert all(Image.open(t["output_image"]).size == (64, 64) for t in traces)
