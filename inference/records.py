"""The one normalised record every downstream stage reads (eval sets, inference inputs, RL rows).

A dataset folder holds ``records.jsonl`` (one JSON object per line) and its images under
``images/``::

    {"id": str, "source": str, "instruction": str, "image": "images/x.png",
     "references": ["images/x.ref0.png", ...],
     "decomposition": {"actions": [...], "subjects": [...], "goals": [...]} | null,
     "plan": ["sub-request", ...] | null}

Paths in the file are relative to the folder; `read_records` resolves them to absolute paths.
For synthetic items ``references[0]`` is the exact target image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from inference.fileio import load_rgb, read_jsonl_lines, remove_stale_temps, write_jsonl
from inference.protocol import Decomposition, EditPlan

RECORDS_FILE = "records.jsonl"
IMAGES_DIR = "images"


@dataclass(frozen=True)
class Record:
    """One edit request on one image, with what is known about its answer."""

    id: str
    source: str
    instruction: str
    image: Path
    references: tuple[Path, ...] = ()
    decomposition: Decomposition | None = None
    plan: EditPlan | None = None

    def load_image(self) -> Image.Image:
        """The input image as PIL RGB through the one loader (`inference.fileio.load_image`)."""
        return load_rgb(self.image)

    def load_references(self) -> list[Image.Image]:
        return [load_rgb(p, check=False) for p in self.references]

    def to_json(self, folder: str | os.PathLike | None = None) -> dict:
        """The JSON object of `records.jsonl`; paths are made relative to `folder` when inside it."""
        rel = lambda p: _relative(Path(p), folder)  # noqa: E731
        return {
            "id": self.id,
            "source": self.source,
            "instruction": self.instruction,
            "image": rel(self.image),
            "references": [rel(p) for p in self.references],
            "decomposition": None if self.decomposition is None else self.decomposition.to_ground_truth(),
            "plan": None if self.plan is None else list(self.plan.sub_requests),
        }

    @classmethod
    def from_json(cls, obj: dict, folder: str | os.PathLike) -> Record:
        """Parse one line's object; raise ValueError naming the problem."""
        folder = Path(folder).resolve()
        for key in ("id", "source", "instruction", "image"):
            if not isinstance(obj.get(key), str):
                raise ValueError(f"record lacks string field {key!r}: {str(obj)[:200]}")
        refs = obj.get("references") or []
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"record {obj['id']!r}: references must be a list of paths, got {refs!r:.200}")
        gt = obj.get("decomposition")
        plan = obj.get("plan")
        if plan is not None and (not isinstance(plan, list) or not all(isinstance(s, str) for s in plan)):
            raise ValueError(f"record {obj['id']!r}: plan must be a list of strings, got {plan!r:.200}")
        return cls(
            id=obj["id"],
            source=obj["source"],
            instruction=obj["instruction"],
            image=folder / obj["image"],
            references=tuple(folder / r for r in refs),
            decomposition=None if gt is None else Decomposition.from_ground_truth(gt),
            plan=None if plan is None else EditPlan(tuple(plan)),
        )


def _relative(path: Path, folder: str | os.PathLike | None) -> str:
    if folder is None or not path.is_absolute():
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        raise ValueError(f"image {path} is not inside the dataset folder {folder}") from None


def records_path(folder: str | os.PathLike) -> Path:
    """`folder/records.jsonl`, or the file itself when given a .jsonl path."""
    p = Path(folder)
    return p if p.suffix == ".jsonl" else p / RECORDS_FILE


def read_records(folder: str | os.PathLike) -> Iterator[Record]:
    """Stream the records of a dataset folder (or a records .jsonl file), image paths absolute."""
    path = records_path(folder)
    if not path.is_file():
        raise FileNotFoundError(f"no {RECORDS_FILE} in {folder}")
    for lineno, obj in read_jsonl_lines(path):
        try:
            yield Record.from_json(obj, path.parent)
        except (ValueError, AttributeError) as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None


def write_records(folder: str | os.PathLike, records: Iterable[Record]) -> Path:
    """Write `folder/records.jsonl` atomically (streamed; images must already lie in the folder)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RECORDS_FILE
    remove_stale_temps(folder, recursive=False, target=RECORDS_FILE)
    write_jsonl(path, (record.to_json(folder) for record in records))
    return path
