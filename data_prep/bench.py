"""Throughput and peak memory of the synthetic-set writer at two sizes (`make bench`).

Each size runs `data_prep.synthetic.write_dataset` (verl RL + SFT + EasyR1 parquet for train and
val, the eval records with images, corpus.txt) in a fresh subprocess, which reports its rows/s
and peak resident memory (`resource.getrusage` maxrss). Streaming means the peak at 20,000 rows
stays within 30% of the peak at 2,000.

    python -m data_prep.bench            # writes outputs/bench/data_prep.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (2000, 20000)
VAL_ROWS = 256
MAX_PEAK_GROWTH = 1.30


def _child(rows: int, val: int) -> None:
    """Run in the subprocess: write one dataset and print its figures as JSON."""
    import resource

    from data_prep.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_dataset(tmp, train=rows, val=val, seed=0, progress=False)
        seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    total = rows + val
    print(
        json.dumps(
            {"rows": total, "seconds": seconds, "rows_per_s": total / seconds, "peak_mib": peak_kib / 1024}
        )
    )


def measure(rows: int, val: int = VAL_ROWS) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    out = subprocess.run(
        [sys.executable, "-m", "data_prep.bench", "--child", str(rows), "--val", str(val)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="train rows per run")
    parser.add_argument("--val", type=int, default=VAL_ROWS, help="val rows (and eval records) per run")
    parser.add_argument("--out", default="outputs/bench/data_prep.json")
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.child, args.val)
        return 0
    results = [measure(n, args.val) for n in args.sizes]
    small, large = results[0], results[-1]
    growth = large["peak_mib"] / small["peak_mib"]
    print(f"{'train rows':>10} {'rows':>7} {'seconds':>8} {'rows/s':>8} {'peak MiB':>9}")
    for n, r in zip(args.sizes, results, strict=True):
        print(f"{n:>10} {r['rows']:>7} {r['seconds']:>8.1f} {r['rows_per_s']:>8.0f} {r['peak_mib']:>9.1f}")
    print(
        f"peak growth {large['rows'] // small['rows']}x rows: {growth:.3f}x (limit {MAX_PEAK_GROWTH}x); "
        f"throughput ratio {large['rows_per_s'] / small['rows_per_s']:.2f}"
    )
    summary = {
        "benchmark": "synthetic dataset writer (verl RL + SFT + EasyR1 parquet, eval records, corpus)",
        "val_rows": args.val,
        "results": dict(zip(map(str, args.sizes), results, strict=True)),
        "peak_growth": growth,
        "peak_growth_limit": MAX_PEAK_GROWTH,
        "peak_growth_ok": growth <= MAX_PEAK_GROWTH,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if growth <= MAX_PEAK_GROWTH else 1


if __name__ == "__main__":
    raise SystemExit(main())
