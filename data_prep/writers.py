"""Training-data writers: verl RL parquet, verl SFT parquet (cold start) and EasyR1 parquet.

All three are streamed (one row group at a time through `pyarrow.parquet.ParquetWriter`) and
written atomically, so peak memory does not grow with the dataset and a killed run leaves no
half-written file. Column layouts:

- verl RL (`verl.utils.dataset.rl_dataset.RLHFDataset`): `data_source`, `prompt` (chat messages;
  the user text holds one `<image>` per image), `images` (list of HF image structs
  {bytes, path}), `ability`, `reward_model` {style, ground_truth = `Decomposition.to_json()`},
  `extra_info` {index, id, split, request, plan}.
- verl SFT (`verl.utils.dataset.multiturn_sft_dataset.MultiTurnSFTDataset`, the dataset of
  verl 0.9.1's `sft_trainer`): `messages` (user prompt with `<image>` + assistant answer
  `render_decomposition(gt)`), `images`, plus `id`, `data_source`.
- EasyR1 (`verl.utils.dataset.RLHFDataset` of hiyouga/EasyR1): `prompt` (plain string with
  `<image>`), `answer` (ground-truth JSON string), `images`, plus `id`, `data_source`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from inference.fileio import temp_path_near
from inference.prompts import IMAGE_PLACEHOLDER, decomposition_prompt
from inference.protocol import Decomposition, EditPlan, render_decomposition

#: verl's `ability` column; verl passes it through untouched.
ABILITY = "image_edit_decomposition"
ROW_GROUP_ROWS = 256

_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
RL_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(_MESSAGE)),
        ("images", pa.list_(_IMAGE)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        (
            "extra_info",
            pa.struct(
                [
                    ("index", pa.int64()),
                    ("id", pa.string()),
                    ("split", pa.string()),
                    ("request", pa.string()),
                    ("plan", pa.list_(pa.string())),
                ]
            ),
        ),
    ]
)
SFT_SCHEMA = pa.schema(
    [
        ("messages", pa.list_(_MESSAGE)),
        ("images", pa.list_(_IMAGE)),
        ("id", pa.string()),
        ("data_source", pa.string()),
    ]
)
EASYR1_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("answer", pa.string()),
        ("images", pa.list_(_IMAGE)),
        ("id", pa.string()),
        ("data_source", pa.string()),
    ]
)


@dataclass(frozen=True)
class TrainingExample:
    """What every training row is made of: one image, one request, its ground truth."""

    id: str
    source: str
    instruction: str
    image_png: bytes
    decomposition: Decomposition
    plan: EditPlan | None = None
    #: The answer the SFT row teaches, when it is not the ground truth (a teacher's annotation); the RL
    #: and EasyR1 rows always carry the ground truth for the reward.
    sft_answer: Decomposition | None = None


def verl_image_support_problem() -> str | None:
    """Why verl would drop our image rows here (None when it will not): verl's RLHFDataset length
    filter needs `qwen_vl_utils`; without it `filter_overlong_prompts=True` silently drops them all."""
    import importlib.util

    if importlib.util.find_spec("qwen_vl_utils") is None:
        return (
            "qwen_vl_utils is not installed: verl's RLHFDataset with filter_overlong_prompts=True will "
            "silently drop every image row (install verl[verl-core] or qwen-vl-utils)"
        )
    return None


def user_prompt_text(instruction: str) -> str:
    """The decomposition prompt with the image placeholder first (images precede text, as in
    `inference.prompts.user_message`)."""
    return IMAGE_PLACEHOLDER + decomposition_prompt(instruction)


def _image_list(example: TrainingExample) -> list[dict[str, Any]]:
    return [{"bytes": example.image_png, "path": None}]


def verl_rl_row(example: TrainingExample, index: int, split: str) -> dict[str, Any]:
    return {
        "data_source": example.source,
        "prompt": [{"role": "user", "content": user_prompt_text(example.instruction)}],
        "images": _image_list(example),
        "ability": ABILITY,
        "reward_model": {"style": "rule", "ground_truth": example.decomposition.to_json()},
        "extra_info": {
            "index": index,
            "id": example.id,
            "split": split,
            "request": example.instruction,
            "plan": None if example.plan is None else list(example.plan.sub_requests),
        },
    }


def verl_sft_row(example: TrainingExample) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": user_prompt_text(example.instruction)},
            {
                "role": "assistant",
                "content": render_decomposition(example.sft_answer or example.decomposition),
            },
        ],
        "images": _image_list(example),
        "id": example.id,
        "data_source": example.source,
    }


def easyr1_row(example: TrainingExample) -> dict[str, Any]:
    return {
        "prompt": user_prompt_text(example.instruction),
        "answer": example.decomposition.to_json(),
        "images": _image_list(example),
        "id": example.id,
        "data_source": example.source,
    }


class ParquetStreamWriter:
    """Append rows; flush a row group every `row_group_rows`; the file appears only on `close()`."""

    def __init__(self, path: str | os.PathLike, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS):
        self.path = Path(path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.rows = 0
        self._pending: list[dict[str, Any]] = []
        self._tmp = temp_path_near(self.path)
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    @property
    def rows_pending(self) -> int:
        """Rows written so far, flushed or not."""
        return self.rows + len(self._pending)

    def write(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self.schema))
            self.rows += len(self._pending)
            self._pending = []

    def finish(self) -> None:
        """Flush and close the temp file (it is not yet visible at `path`)."""
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def close(self) -> Path:
        self.finish()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file (the destination keeps whatever it held before)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShardedParquetWriter:
    """`ParquetStreamWriter` that starts a new file every `shard_rows` rows: `<stem>-00000.parquet`, ...
    (verl takes the list of files). With `shard_rows=None` it writes the single file `<stem>.parquet`."""

    def __init__(self, folder: Path, stem: str, schema: pa.Schema, shard_rows: int | None = None):
        self.folder, self.stem, self.schema, self.shard_rows = folder, stem, schema, shard_rows
        self.rows = 0
        self.files: list[Path] = []
        self._done: list[ParquetStreamWriter] = []
        self._current: ParquetStreamWriter | None = None

    def _path(self, shard: int) -> Path:
        name = f"{self.stem}.parquet" if self.shard_rows is None else f"{self.stem}-{shard:05d}.parquet"
        return self.folder / name

    def write(self, row: dict[str, Any]) -> None:
        if self._current is None or (self.shard_rows and self._current.rows_pending >= self.shard_rows):
            if self._current is not None:
                self._current.finish()  # nothing of a finished shard stays in memory
                self._done.append(self._current)
            self._current = ParquetStreamWriter(self._path(len(self._done)), self.schema)
        self._current.write(row)
        self.rows += 1

    def close(self) -> list[Path]:
        if self._current is None:  # no rows: still write one (empty) file so readers find it
            self._current = ParquetStreamWriter(self._path(0), self.schema)
        # shards become visible together, at the end (a killed run leaves none half-written)
        self.files = [w.close() for w in [*self._done, self._current]]
        return self.files

    def abort(self) -> None:
        for w in [*self._done, *([self._current] if self._current else [])]:
            w.abort()


def write_training_sets(
    out_dir: str | os.PathLike,
    examples: Iterable[TrainingExample],
    split: str,
    rl: bool = True,
    sft: bool = True,
    easyr1: bool = True,
    name: str | None = None,
    shard_rows: int | None = None,
) -> dict[str, int]:
    """Write `<name or split>.parquet` (verl RL), `sft_<..>.parquet` and `easyr1_<..>.parquet` in one
    pass over `examples` (`-00000`, `-00001`, ... shards of `shard_rows` rows when given); returns
    rows written per file name."""
    out = Path(out_dir)
    stem = name or split
    kinds = [("rl", stem, RL_SCHEMA, rl), ("sft", f"sft_{stem}", SFT_SCHEMA, sft)]
    kinds.append(("easyr1", f"easyr1_{stem}", EASYR1_SCHEMA, easyr1))
    writers = {
        kind: ShardedParquetWriter(out, file_stem, schema, shard_rows)
        for kind, file_stem, schema, on in kinds
        if on
    }
    try:
        for index, example in enumerate(examples):
            if "rl" in writers:
                writers["rl"].write(verl_rl_row(example, index, split))
            if "sft" in writers:
                writers["sft"].write(verl_sft_row(example))
            if "easyr1" in writers:
                writers["easyr1"].write(easyr1_row(example))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    counts = {}
    for writer in writers.values():
        for path in writer.close():
            counts[path.name] = pq.ParquetFile(path).metadata.num_rows
    return counts
