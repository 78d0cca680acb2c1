"""The written account of a data run: rows seen, kept, skipped (by reason) and normalised.

Nothing is dropped silently: every skip is counted under a reason with a few example rows, and
the report is written next to the outputs (`report.json`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.fileio import write_json

EXAMPLES_PER_REASON = 5


@dataclass
class Report:
    seen: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    normalised: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, row_id: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES_PER_REASON:
            kept.append(f"{row_id}: {detail}"[:300])

    def note(self, what: str, n: int = 1) -> None:
        self.normalised[what] += n

    def merge(self, other: Report) -> Report:
        self.seen += other.seen
        self.kept += other.kept
        self.skipped.update(other.skipped)
        self.normalised.update(other.normalised)
        for reason, rows in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(rows[: max(0, EXAMPLES_PER_REASON - len(mine))])
        return self

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "kept": self.kept,
            "skipped": self.n_skipped,
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "normalised": dict(sorted(self.normalised.items())),
            "examples": dict(sorted(self.examples.items())),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Report:
        return cls(
            seen=obj["seen"],
            kept=obj["kept"],
            skipped=Counter(obj.get("skipped_by_reason", {})),
            normalised=Counter(obj.get("normalised", {})),
            examples={k: list(v) for k, v in obj.get("examples", {}).items()},
        )

    def write(self, path: str | os.PathLike) -> Path:
        return write_json(path, self.to_json())

    def summary(self) -> str:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"seen {self.seen}, kept {self.kept}, skipped {self.n_skipped} ({reasons})"
