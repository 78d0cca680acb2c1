"""Read back what W&B itself recorded in an offline run folder (tests assert from it, not only from
the trainer's own metrics.jsonl)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
    rows = []
    for record in _records(run_dir):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.append(row)
    return rows


def _records(run_dir: str | os.PathLike) -> Iterator[Any]:
    """The records of a local W&B run's `.wandb` file (protobuf `Record`s), in order."""
    from wandb.proto import wandb_internal_pb2

    files = sorted(Path(run_dir).glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in W&B run folder {run_dir}")
    data = files[0].read_bytes()
    if not data.startswith(b":W&B"):
        raise ValueError(f"{files[0]} is not a W&B run file (no :W&B header)")
    for payload in _leveldb_records(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def read_wandb_tables(run_dir: str | os.PathLike, key: str) -> list[dict[str, Any]]:
    """Every logged version of the W&B table `key`, as W&B will upload it: the `run_table` artifact
    wandb 0.31 logs for each table (the run's own media/table file stores images as the string
    "Image"), its JSON read from the staged file, and `files` = artifact path -> staged local file
    (the images: `media/images/*.png`)."""
    tables = []
    for record in _records(run_dir):
        if record.WhichOneof("record_type") != "artifact" or record.artifact.type != "run_table":
            continue
        files = {entry.path: Path(entry.local_path) for entry in record.artifact.manifest.contents}
        name = f"{key}.table.json"
        if name in files:
            tables.append({**json.loads(files[name].read_text()), "files": files})
    return tables
