"""Readers for local copies of the benchmarks: an HF `datasets` folder (save_to_disk), parquet
shards, CSV/JSONL, or a JSON array of objects, plus an image folder. Rows stream (a JSON array is
read whole); nothing else holds a whole dataset in memory.

A `Preset` names a benchmark's columns (`ColumnMap`); any mapping can be overridden. A column the
mapping asks for but the data lacks is a `ColumnError` that lists the columns present.

Schemas (from the public cards / code; verify against your copy):
- UltraEdit (BleachNick/UltraEdit): `idx`, `edit_prompt`, `source_image`, `edited_image`, ...
  (splits FreeForm_0, FreeForm_1, ..., no test split).
- RealEdit (peter-sushko/RealEdit): curation CSV `orig_img`, `instruction`, `edit_images`
  (paths joined with `|`); its inference code reads `input_image_name`, `instruction`.
- PSR-328 (PSRDataset/PSR-328, the paper's PSR): `post_id`, `instruction`, `simplified_instruction`,
  `source_image`, `ai_edited_image`, `human_edited_image`; several rows per post (one per edit).
- PhotoshopRequests (taesiri/PhotoshopRequests, ~20k validation rows): `reddit_id`, `description`,
  `original_image`, `edit_image`.
- GEdit-Bench (stepfun-ai/GEdit-Bench): `key`, `task_type`, `instruction`, `instruction_language`,
  `input_image`.
RealEdit's card could not be read; its maps follow its code and stay overridable (`--columns`).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: `split` value that reads every split of a local copy (UltraEdit has no test split).
ALL_SPLITS = "all"


def _natural_key(name: str) -> list:
    """FreeForm_2 before FreeForm_10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


class ColumnError(ValueError):
    """The data lacks a column the mapping needs."""


@dataclass(frozen=True)
class ColumnMap:
    """Which column holds what. `id=None` numbers rows; a reference column may hold several paths
    joined by `reference_separator`. `group_by_id` merges the rows sharing an id into one item
    (first row's instruction and image, every row's references); `where` keeps only the rows whose
    columns hold the given values (before sampling)."""

    instruction: str
    image: str
    id: str | None = None
    references: tuple[str, ...] = ()
    reference_separator: str | None = None
    decomposition: str | None = None
    group_by_id: bool = False
    where: tuple[tuple[str, str], ...] = ()

    def required(self) -> list[str]:
        cols = [self.instruction, self.image, *self.references]
        cols += [c for c in (self.id, self.decomposition) if c]
        return list(dict.fromkeys(cols + [c for c, _ in self.where]))

    def keeps(self, row: dict[str, Any]) -> bool:
        """Whether a row passes `where` (values compared as text)."""
        return all(str(row.get(column)) == value for column, value in self.where)

    def with_overrides(self, overrides: dict[str, str]) -> ColumnMap:
        """`{"instruction": "prompt", "references": "a,b"}` -> a new map; unknown keys are errors."""
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown column-map key {key!r}; keys: {sorted(self.__dataclass_fields__)}")
            if key == "references":
                changes[key] = (
                    tuple(v for v in value.split(",") if v) if isinstance(value, str) else tuple(value)
                )
            elif key == "group_by_id":
                changes[key] = str(value).strip().lower() in ("1", "true", "yes")
            elif key == "where":  # "column=value,column=value" ('' clears)
                pairs = [p.partition("=") for p in str(value).split(",") if p.strip()]
                if any(not sep or not c for c, sep, _ in pairs):
                    raise ValueError(f"where wants column=value[,column=value], got {value!r}")
                changes[key] = tuple((c.strip(), v.strip()) for c, _, v in pairs)
            else:
                changes[key] = (
                    value or None if key in ("id", "decomposition", "reference_separator") else value
                )
        return replace(self, **changes)


@dataclass(frozen=True)
class Preset:
    """A benchmark: its source name, columns, and how the paper sampled its eval set."""

    source: str
    columns: ColumnMap
    eval_sample: int | None = None  # None: every row
    eval_split: str | None = None
    notes: str = ""


PRESETS: dict[str, Preset] = {
    "ultraedit": Preset(
        "ultraedit",
        ColumnMap(id="idx", instruction="edit_prompt", image="source_image", references=("edited_image",)),
        eval_sample=1000,
        eval_split=ALL_SPLITS,
        notes="no test split: sample from all FreeForm_* splits present",
    ),
    "realedit": Preset(
        "realedit",
        ColumnMap(
            instruction="instruction", image="orig_img", references=("edit_images",), reference_separator="|"
        ),
        eval_sample=1000,
        eval_split="test",
    ),
    "realedit-csv": Preset(
        "realedit",
        ColumnMap(instruction="instruction", image="input_image_name"),
        eval_sample=1000,
        eval_split="test",
        notes="test.csv + --image-dir (the folder of input_image_name files)",
    ),
    "psr-328": Preset(
        "psr",
        ColumnMap(
            id="post_id",
            instruction="instruction",
            image="source_image",
            references=("human_edited_image",),
            group_by_id=True,
        ),
        eval_sample=None,
        notes="PSRDataset/PSR-328: one item per post_id (328), every human edit a reference",
    ),
    "photoshop-requests": Preset(
        "photoshop_requests",
        ColumnMap(
            id="reddit_id",
            instruction="description",
            image="original_image",
            references=("edit_image",),
            group_by_id=True,
        ),
        eval_sample=None,
        notes="taesiri/PhotoshopRequests (~20k validation rows): one item per reddit_id, its edits as references",
    ),
    "gedit-bench": Preset(
        "gedit_bench",
        ColumnMap(
            id="key", instruction="instruction", image="input_image", where=(("instruction_language", "en"),)
        ),
        eval_sample=None,
        notes="stepfun-ai/GEdit-Bench, English instructions (--columns where=instruction_language=cn for Chinese)",
    ),
}


@dataclass
class TableSource:
    """Rows of one local copy. `base_dir` resolves relative image paths."""

    path: Path
    kind: str  # hf | parquet | csv | jsonl
    columns: list[str]
    base_dir: Path
    files: list[Path] = field(default_factory=list)
    split: str | None = None
    _length: int | None = None
    _rows: list[dict] | None = None  # a JSON array, read whole
    #: Set by `select`: rows filtered by `where`, merged by id (None: every row as it is).
    columns_map: ColumnMap | None = None

    def select(self, columns: ColumnMap) -> TableSource:
        """Apply the map's row filter and id grouping to `iter_rows` and `len` (counted again)."""
        if columns.where or columns.group_by_id:
            self.columns_map = columns
            self._length = None
        return self

    def check_columns(self, needed: list[str]) -> None:
        missing = [c for c in needed if c not in self.columns]
        if missing:
            raise ColumnError(
                f"{self.path}: missing column(s) {missing}; columns present: {sorted(self.columns)}"
            )

    def __len__(self) -> int:
        if self._length is None:
            if self.columns_map is not None:
                m = self.columns_map
                light = [c for c in m.required() if c not in m.references and c != m.image]
                self._length = sum(1 for _ in self.iter_rows(columns=light))
            elif self.kind == "parquet":
                import pyarrow.parquet as pq

                self._length = sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
            elif self.kind == "hf":
                self._length = len(_load_hf(self.path, self.split))
            else:
                self._length = sum(1 for _ in self.iter_rows())
        return self._length

    def iter_rows(
        self, columns: list[str] | None = None, batch_rows: int = 64, only: set[int] | None = None
    ) -> Iterator[tuple[int, dict]]:
        """(row index, row dict) in file order; image columns come as {bytes, path} or paths.
        `only` restricts to those row indices; parquet and HF folders then read nothing else
        (sampling 1,000 of UltraEdit's millions touches only their row groups). After `select`,
        indices count the kept (merged) rows and `only` applies to those."""
        if self.columns_map is not None:
            yield from _selected(self._raw_rows(columns, batch_rows), self.columns_map, only)
        else:
            yield from self._raw_rows(columns, batch_rows, only)

    def _raw_rows(
        self, columns: list[str] | None, batch_rows: int, only: set[int] | None = None
    ) -> Iterator[tuple[int, dict]]:
        if self.kind == "json":
            for index, row in enumerate(self._rows or []):
                if only is None or index in only:
                    yield index, row
        elif self.kind == "parquet":
            yield from _iter_parquet(self.files, columns, batch_rows, only)
        elif self.kind == "hf":
            yield from _iter_hf(self.path, self.split, columns, batch_rows, only)
        elif self.kind == "csv":
            with self.path.open(newline="", encoding="utf-8-sig") as fh:
                for index, row in enumerate(csv.DictReader(fh)):
                    if only is None or index in only:
                        yield index, row
        else:
            with self.path.open(encoding="utf-8") as fh:
                index = 0
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        row = {"__error__": f"{self.path}:{lineno}: invalid JSON ({exc.msg})"}
                    if not isinstance(row, dict):
                        row = {"__error__": f"{self.path}:{lineno}: not a JSON object"}
                    if only is None or index in only:
                        yield index, row
                    index += 1


def _selected(
    rows: Iterator[tuple[int, dict]], m: ColumnMap, only: set[int] | None
) -> Iterator[tuple[int, dict]]:
    """Rows passing `m.where`; with `m.group_by_id`, one merged row per id in first-seen order (the
    groups are held in memory: benchmarks with several rows per item are small)."""
    kept = (row for _, row in rows if "__error__" in row or m.keeps(row))
    if not m.group_by_id or not m.id:
        for index, row in enumerate(kept):
            if only is None or index in only:
                yield index, row
        return
    groups: dict[str, dict] = {}
    errors: list[dict] = []
    for row in kept:
        key = row.get(m.id)
        if "__error__" in row or key in (None, ""):
            errors.append(row)  # reported as its own (skipped) row
            continue
        merged = groups.get(str(key))
        if merged is None:
            groups[str(key)] = {**row, **{c: _as_list(row.get(c), m) for c in m.references}}
        else:
            for c in m.references:
                merged[c] = merged[c] + _as_list(row.get(c), m)
    for index, row in enumerate([*groups.values(), *errors]):
        if only is None or index in only:
            yield index, row


def _as_list(value: Any, m: ColumnMap) -> list:
    if isinstance(value, str) and m.reference_separator:
        return [v for v in value.split(m.reference_separator) if v.strip()]
    if isinstance(value, list):
        return list(value)
    return [] if value in (None, "") else [value]


def _load_hf(path: Path, split: str | None):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split == ALL_SPLITS:  # memory-mapped concatenation: nothing is loaded
            return datasets.concatenate_datasets([ds[name] for name in sorted(ds, key=_natural_key)])
        if split is None:
            if len(ds) != 1:
                raise ValueError(f"{path} holds splits {sorted(ds)}; choose one with --split")
            split = next(iter(ds))
        if split not in ds:
            raise ValueError(f"{path} has no split {split!r}; splits present: {sorted(ds)}")
        ds = ds[split]
    return ds


def _iter_hf(
    path: Path, split: str | None, columns: list[str] | None, batch_rows: int, only: set[int] | None
):
    import datasets

    ds = _load_hf(path, split)
    if columns:
        ds = ds.select_columns(columns)
    for name, feature in ds.features.items():  # keep images encoded: decoding happens per row, guarded
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, datasets.Sequence | list) and isinstance(
            getattr(feature, "feature", None), datasets.Image
        ):
            ds = ds.cast_column(name, datasets.Sequence(datasets.Image(decode=False)))
    indices = sorted(only) if only is not None else None
    if indices is not None:
        ds = ds.select(indices)
    position = 0
    for batch in ds.iter(batch_size=batch_rows):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys), strict=True):
            yield (
                (indices[position] if indices is not None else position),
                dict(zip(keys, values, strict=True)),
            )
            position += 1


def _iter_parquet(files: list[Path], columns: list[str] | None, batch_rows: int, only: set[int] | None):
    import pyarrow.parquet as pq

    offset = 0
    for file in files:
        pf = pq.ParquetFile(file)
        if only is None:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                for row in batch.to_pylist():
                    yield offset, row
                    offset += 1
            continue
        for group in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            wanted = [i - offset for i in range(offset, offset + n) if i in only]
            if wanted:
                table = pf.read_row_group(group, columns=columns).take(wanted)
                for local, row in zip(wanted, table.to_pylist(), strict=True):
                    yield offset + local, row
            offset += n


def _parquet_files(path: Path, split: str | None) -> list[Path]:
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    if split not in (None, ALL_SPLITS) and path.is_dir():
        files = [f for f in files if split in f.relative_to(path).as_posix()]
    if not files:
        raise FileNotFoundError(
            f"no parquet files{' for split ' + repr(split) if split else ''} under {path}"
        )
    return files


def open_source(
    path: str | os.PathLike, split: str | None = None, image_dir: str | os.PathLike | None = None
):
    """Detect the format of a local copy and return its `TableSource`.

    - a folder written by `datasets.save_to_disk` (dataset_info.json / dataset_dict.json / state.json)
    - a .parquet file or a folder of parquet shards (`split` filters file paths, e.g. FreeForm_0)
    - a .csv or .jsonl file; relative image paths resolve against `image_dir` (default: its folder)
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no dataset at {p}")
    base = Path(image_dir) if image_dir is not None else (p if p.is_dir() else p.parent)
    if p.is_dir() and any((p / n).exists() for n in ("dataset_dict.json", "dataset_info.json", "state.json")):
        ds = _load_hf(p, split)
        return TableSource(p, "hf", list(ds.column_names), base, split=split, _length=len(ds))
    if p.is_dir() or p.suffix == ".parquet":
        import pyarrow.parquet as pq

        files = _parquet_files(p, split)
        return TableSource(p, "parquet", list(pq.read_schema(files[0]).names), base, files=files, split=split)
    if p.suffix == ".csv":
        with p.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
        return TableSource(p, "csv", header, base)
    if p.suffix == ".json" and _starts_with(p, "["):
        return _json_array_source(p, base)
    if p.suffix in (".jsonl", ".json"):
        columns: list[str] = []
        with p.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    try:
                        first = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(first, dict):
                        columns = list(first)
                        break
        return TableSource(p, "jsonl", columns, base)
    raise ValueError(
        f"unsupported dataset format: {p} (want a datasets folder, parquet, csv, jsonl or a JSON array)"
    )


def _starts_with(path: Path, char: str) -> bool:
    with path.open(encoding="utf-8-sig") as fh:
        head = fh.read(4096).lstrip()
    return head.startswith(char)


def _json_array_source(path: Path, base: Path) -> TableSource:
    """A .json file holding one array of objects (the common `json.dump(rows)` export)."""
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: a .json input must be an array of objects, got {type(rows).__name__}")
    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: element {bad} of the array is {type(rows[bad]).__name__}, not an object")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return TableSource(path, "json", columns, base, _length=len(rows), _rows=rows)
