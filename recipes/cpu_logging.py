"""Per-step metrics of the CPU trainer, written twice: a real W&B run (online with WANDB_API_KEY,
offline otherwise, under `<out_dir>/wandb/`) and `<out_dir>/metrics.jsonl` (one JSON object per step,
the contract `eval.curves.load_metrics` reads)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: Name of the per-step log in a run folder (read by eval/curves.py).
METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """JSON-safe scalar: tensors and numpy numbers become floats, non-finite floats become None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """Appends one record per step to metrics.jsonl and to a W&B run; `close()` finishes both."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        project: str,
        name: str,
        config: Mapping[str, Any] | None = None,
        use_wandb: bool = True,
        metrics_file: str = METRICS_FILE,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_file = metrics_file
        self.path = self.out_dir / metrics_file
        self._files: dict[str, Any] = {}
        self._defined: set[str] = set()
        self.wandb_run = None
        if use_wandb:
            import wandb

            mode = os.environ.get("WANDB_MODE") or (
                "online" if os.environ.get("WANDB_API_KEY") else "offline"
            )
            self.wandb_run = wandb.init(
                project=project,
                name=name,
                dir=str(self.out_dir),
                mode=mode,
                config=dict(config or {}),
                reinit="finish_previous",
            )

    @property
    def wandb_dir(self) -> Path | None:
        """The run's local folder (`<out_dir>/wandb/offline-run-*` offline)."""
        return Path(self.wandb_run.dir).parent if self.wandb_run is not None else None

    def log(self, step: int, metrics: Mapping[str, Any], stream: str = "train") -> None:
        """One step of `stream`: "train" (GRPO; metrics.jsonl) or another name (`<stream>_metrics.jsonl`).

        W&B gets every stream in one run, each metric plotted against its own `<stream>/step`
        (so SFT steps and GRPO steps do not collide on W&B's global step).
        """
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._stream_file(stream).write(json.dumps(record) + "\n")
        self._stream_file(stream).flush()
        if self.wandb_run is not None:
            axis = f"{stream}/step"
            for key in record:
                if key != "step" and key not in self._defined:
                    self.wandb_run.define_metric(key, step_metric=axis)
                    self._defined.add(key)
            row = {k: v for k, v in record.items() if k != "step" and v is not None}
            self.wandb_run.log({axis: int(step), **row})

    def _stream_file(self, stream: str):
        if stream not in self._files:
            name = self.metrics_file if stream == "train" else f"{stream}_{self.metrics_file}"
            self._files[stream] = (self.out_dir / name).open("a", encoding="utf-8")
        return self._files[stream]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _leveldb_records(data: bytes, header: int = 7, block: int = 32768) -> Iterator[bytes]:
    """Payloads of a LevelDB-log file (W&B's `.wandb` format after its 7-byte `:W&B` header).

    wandb 0.31's Python package no longer ships a reader (its core is Go): this is the log format's
    record framing only (4-byte CRC, 2-byte length, 1-byte type; FULL=1, FIRST=2, MIDDLE=3, LAST=4).
    """
    pos, pending = header, b""
    while pos + 7 <= len(data):
        room = block - (pos % block)
        if room < 7:  # block trailer padding
            pos += room
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield payload
        elif kind == 2:
            pending = payload
        elif kind == 3:
            pending += payload
        elif kind == 4:
            yield pending + payload
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            pos += block - (pos % block) if pos % block else 0


def read_wandb_history(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """History rows (metric -> value, with `_step`) stored in a local W&B run's `.wandb` file.

    Lets a test assert from what W&B itself recorded, not only from metrics.jsonl.
    """
    from wandb.proto import wandb_internal_pb2

    files = sorted(Path(run_dir).glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in W&B run folder {run_dir}")
    data = files[0].read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{files[0]} is not a W&B run file (no :W&B header)")
    rows = []
    for payload in _leveldb_records(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows
