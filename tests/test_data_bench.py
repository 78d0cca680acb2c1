"""`python -m data_prep.bench` runs end to end (tiny sizes; no timing assertions)."""

from __future__ import annotations

import json

from data_prep import bench


def test_bench_writes_its_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--sizes", "20", "60", "--val", "8", "--out", str(out)])
    summary = json.loads(out.read_text())
    assert set(summary["results"]) == {"20", "60"} and summary["results"]["20"]["rows"] == 28
    for result in summary["results"].values():
        assert result["rows_per_s"] > 0 and result["peak_mib"] > 0
    assert "peak growth" in capsys.readouterr().out
