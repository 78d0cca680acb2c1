"""HF folders of the CPU stages, written atomically, with a completion record a rerun trusts.

A stage folder (`<out_dir>/sft`, `<out_dir>/grpo`) holds `save_pretrained` output of the model and
the processor (loadable by `AutoModelForImageTextToText` / `AutoProcessor`, hence by the inference
pipeline) plus `stage.json`, written last. It is built in a temporary sibling folder and moved into
place with `os.replace`, so a killed run never leaves a half-written folder under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Written last into a finished stage folder: what the stage produced (metrics, steps, timings).
STAGE_RECORD = "stage.json"


def stage_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The completion record of a finished stage folder, or None if the folder is absent/incomplete."""
    path = Path(folder) / STAGE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON to a temp file in the same folder, then os.replace it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_stage(model, processor, folder: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Save model + processor + `stage.json` to `folder` atomically (replacing an older one)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_json_atomic(tmp / STAGE_RECORD, dict(record))
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def load_policy(folder: str | os.PathLike):
    """(model, processor) from an HF folder, the way the inference pipeline loads them."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    return model, processor
