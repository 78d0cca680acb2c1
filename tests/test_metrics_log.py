"""recipes/metrics_log.py: verl's own Tracking, with the module loaded through verl's external-modules
hook as the launcher loads it, appends to the run's file instead of truncating it (tracking.py:541)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LOG_ONE_STEP = """
import sys
from verl.utils import tracking
logger = tracking.Tracking("p", "e", default_backend=["file"])
logger.log({"score": float(sys.argv[1])}, step=int(sys.argv[2]))
logger.finish()
"""


def run_attempt(log: Path, score: float, step: int) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "VERL_USE_EXTERNAL_MODULES": "recipes.metrics_log",
        "VERL_FILE_LOGGER_PATH": str(log),
    }
    subprocess.run(
        [sys.executable, "-c", LOG_ONE_STEP, str(score), str(step)], env=env, check=True, timeout=120
    )


def test_each_attempt_appends_and_a_torn_tail_is_dropped(tmp_path):
    from eval.curves import load_metrics

    log = tmp_path / "metrics.jsonl"
    run_attempt(log, 0.1, 1)
    with log.open("ab") as fp:  # an attempt killed mid-line
        fp.write(b'{"step": 2, "data": {"sco')
    run_attempt(log, 0.2, 2)
    run_attempt(log, 0.25, 2)  # the step again, after a crash before the next checkpoint
    written = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in written] == [1, 2, 2]
    assert len({r["attempt"] for r in written}) == 3
    assert [(m["step"], m["score"]) for m in load_metrics(log)] == [(1, 0.1), (2, 0.25)]


def test_install_refuses_a_verl_whose_file_logger_it_does_not_know(monkeypatch):
    import pytest
    from verl.utils import tracking

    from recipes import metrics_log

    class OtherFileLogger:
        def __init__(self, project_name, experiment_name):
            self.fp = open(os.devnull, "ab")  # noqa: SIM115

    monkeypatch.setattr(tracking, "FileLogger", OtherFileLogger)
    with pytest.raises(metrics_log.VerlVersionError, match="tracking.py:541"):
        metrics_log.install()
