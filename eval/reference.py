"""Reference metrics where a reference edit exists (synthetic targets, UltraEdit / RealEdit references).

* PSNR and SSIM (scikit-image) of the output against the reference, overall and outside the
  edited region. The region is where the input and the reference differ (max channel difference
  above `threshold`, dilated by `dilate` pixels): outside it, a good edit leaves the input alone.
* Exact correctness on the synthetic set: the output equals the target pixel for pixel, or both
  carry the same scene (`inference.scenes.scene_of`).
* Decomposition F1 (actions / subjects / goals) and format against the ground truth, computed by
  the training reward itself (`reward_fns/imageedit_r1.py`), so eval and training agree.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from inference.fileio import BadImage, load_rgb, read_jsonl, write_jsonl

#: PSNR of identical images is infinite; it is reported as this many dB (JSON has no infinity).
PSNR_CAP_DB = 100.0
REFERENCE_METRICS: tuple[str, ...] = ("psnr", "ssim", "psnr_outside", "ssim_outside")


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def edit_region(
    source: Image.Image, reference: Image.Image, threshold: float = 8.0, dilate: int = 1
) -> np.ndarray:
    """Boolean HxW mask of pixels the reference edit changed (plus a `dilate`-pixel margin)."""
    from scipy.ndimage import binary_dilation

    if source.size != reference.size:
        source = source.convert("RGB").resize(reference.size, Image.Resampling.BICUBIC)
    changed = np.abs(_array(source) - _array(reference)).max(axis=2) > threshold
    if dilate > 0 and changed.any():
        changed = binary_dilation(changed, structure=np.ones((3, 3), dtype=bool), iterations=dilate)
    return changed


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """PSNR in dB over the pixels where `mask` is true (all when None); None for an empty mask."""
    diff = (a - b) ** 2
    if mask is not None:
        if not mask.any():
            return None
        diff = diff[mask]
    mse = float(diff.mean())
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    """Mean SSIM (scikit-image, 7x7 window or the largest odd one that fits) over `mask`'s pixels."""
    from skimage.metrics import structural_similarity

    side = min(a.shape[0], a.shape[1])
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return None
    _, full = structural_similarity(a, b, data_range=255.0, channel_axis=2, win_size=win, full=True)
    full = full.mean(axis=2)
    if mask is not None:
        if not mask.any():
            return None
        return float(full[mask].mean())
    return float(full.mean())


def is_exact(output: Image.Image, target: Image.Image) -> bool:
    """Synthetic correctness: same pixels, or the same rendered scene (PNG text chunk)."""
    from inference.scenes import scene_of

    if output.size == target.size and np.array_equal(_array(output), _array(target)):
        return True
    a, b = scene_of(output), scene_of(target)
    return a is not None and a == b


def reference_metrics(
    source: Image.Image, output: Image.Image, reference: Image.Image, threshold: float = 8.0, dilate: int = 1
) -> dict[str, Any]:
    """PSNR/SSIM overall and outside the edited region, and the region's share of the image.

    An output of another size is resized to the reference's (bicubic) and flagged `resized`."""
    resized = output.size != reference.size
    if resized:
        output = output.convert("RGB").resize(reference.size, Image.Resampling.BICUBIC)
    out, ref = _array(output), _array(reference)
    region = edit_region(source, reference, threshold, dilate)
    outside = ~region
    return {
        "psnr": psnr(out, ref),
        "ssim": ssim(out, ref),
        "psnr_outside": psnr(out, ref, outside),
        "ssim_outside": ssim(out, ref, outside),
        "region_fraction": float(region.mean()),
        "resized": resized,
    }


def decomposition_scores(raw_answer: str | None, ground_truth: Mapping[str, Any]) -> dict[str, float]:
    """Format and F1 of a decomposition answer against the ground truth: the training reward's own
    numbers (`reward_fns/imageedit_r1.py`, exact mode), keys score/format/action/subject/goal."""
    from reward_fns.imageedit_r1 import compute_score

    return compute_score("eval", raw_answer or "", json.dumps(dict(ground_truth)))


def trace_decomposition_scores(
    trace_decomposition: Mapping[str, Any], ground_truth: Mapping[str, Any]
) -> dict[str, float | None]:
    """`decomposition_scores` of a trace's decomposition. Without a raw answer (the oracle agent)
    the F1s are those of the parsed lists and `format`/`score` are None (there was no text)."""
    raw = trace_decomposition.get("raw")
    parsed = trace_decomposition.get("parsed")
    if raw is None and isinstance(parsed, Mapping):
        from inference.protocol import Decomposition, render_decomposition

        rendered = render_decomposition(Decomposition.from_ground_truth(parsed))
        return decomposition_scores(rendered, ground_truth) | {"format": None, "score": None}
    return decomposition_scores(raw, ground_truth)


def score_run_against_references(
    run_folder: str | os.PathLike,
    records_folder: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    method: str | None = None,
    editor: str | None = None,
    threshold: float = 8.0,
    dilate: int = 1,
) -> list[dict[str, Any]]:
    """Per-item reference metrics of a pipeline run (JSONL at `out_path`, written atomically).

    Items are matched to records by id; `benchmark` is the record's source. Rows without a
    reference, or whose pipeline failed, carry null metrics and an `error`, never zeros."""
    from inference.pipeline import read_traces
    from inference.records import read_records

    records = {r.id: r for r in read_records(records_folder)}
    rows = []
    for trace in read_traces(run_folder):
        record = records.get(str(trace["id"]))
        row: dict[str, Any] = {
            "id": str(trace["id"]),
            "benchmark": record.source if record else "unknown",
            "editor": editor or str(trace.get("editor") or "unknown"),
            "method": method or str(trace.get("mode") or "unknown"),
            **dict.fromkeys(REFERENCE_METRICS),
            "region_fraction": None,
            "exact": None,
            "decomposition": None,
            "error": None,
        }
        if record is None:
            row["error"] = f"id {trace['id']!r} not in {records_folder}"
        elif record.decomposition is not None and trace.get("decomposition"):
            row["decomposition"] = trace_decomposition_scores(
                trace["decomposition"], record.decomposition.to_ground_truth()
            )
        if record is not None and not trace.get("output_image"):
            row["error"] = f"no edited image (pipeline error: {trace.get('error')})"
            if record.source == "synthetic":
                row["exact"] = False  # no output is an incorrect edit; the image metrics stay null
        elif record is not None and not record.references:
            row["error"] = "no reference image"
        elif record is not None:
            try:  # a missing or corrupt image is this row's error, not the run's
                output = load_rgb(trace["output_image"], check=False)  # PNG text chunks kept in .info
                target = load_rgb(record.references[0], check=False)
                source = record.load_image()
            except BadImage as err:
                row["error"] = f"unreadable image: {err}"
            else:
                row.update(reference_metrics(source, output, target, threshold, dilate))
                if record.source == "synthetic":
                    row["exact"] = is_exact(output, target)
        rows.append(row)
    write_jsonl(out_path, rows)
    return rows


def summarize_reference_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Means per (benchmark, editor, method): image metrics over rows that have them, the exact-match
    rate over all synthetic items (no output counts as not exact), decomposition format and F1s,
    and counts of items and of items with an error."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["benchmark"], r["editor"], r["method"]), []).append(r)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    out = []
    for (benchmark, editor, method), group in groups.items():
        summary: dict[str, Any] = {
            "benchmark": benchmark,
            "editor": editor,
            "method": method,
            "items": len(group),
        }
        for key in REFERENCE_METRICS:
            summary[key] = mean([r[key] for r in group if r.get(key) is not None])
        exact = [bool(r["exact"]) for r in group if r.get("exact") is not None]
        summary["exact"] = mean([float(e) for e in exact])
        decs = [r["decomposition"] for r in group if r.get("decomposition")]
        for key in ("format", "action", "subject", "goal"):
            values = [d[key] for d in decs if d.get(key) is not None]
            summary[f"f1_{key}" if key != "format" else "format"] = mean(values)
        summary["errors"] = sum(r.get("error") is not None for r in group)
        out.append(summary)
    return out


def read_reference_rows(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    return [row for path in paths for row in read_jsonl(path)]
