"""Judging a whole pipeline run folder: bounded concurrency, an on-disk cache, resume, progress.

The cache key is the judge's model id + the exact prompt text + the sampling settings + the hashes
of the two images' pixels, so a rerun (after an interruption, or with more items) asks the
backend nothing it already answered. Only successful judgements are cached: failures are asked
again on the next run. Each answer is cached as soon as its batch returns, and the score file is
written atomically at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from eval.judge import JudgeItem, Judgement, RubricJudge
from eval.scores import failed_fields, write_scores
from eval.verifier import PrincipleVerifier, Verification, VerifyItem, principles_for
from inference.fileio import BadImage, image_hash, load_rgb, remove_stale_temps, write_text

log = logging.getLogger(__name__)
Scorer = RubricJudge | PrincipleVerifier


def cache_key(model_id: str, prompt: str, image_hashes: Sequence[str], sampling: Mapping[str, Any]) -> str:
    blob = json.dumps(
        {"model": model_id, "prompt": prompt, "images": list(image_hashes), "sampling": dict(sampling)},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """One JSON file per key under `folder/<2 hex>/<key>.json`, each written atomically."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.folder)  # entries a killed run was writing

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("ignoring unreadable cache entry %s", path)
            return None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        write_text(self._path(key), json.dumps(value, ensure_ascii=False))

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.json"))


@dataclass
class _Pending:
    """An item still to ask; images are re-read when its batch runs (a run may not fit in memory)."""

    index: int
    key: str
    request: str
    original_path: str
    edited_path: str
    principles: tuple[str, ...] | None = None

    def item(self) -> JudgeItem | VerifyItem:
        original, edited = _load_judged(self.original_path), _load_judged(self.edited_path)
        if self.principles is None:
            return JudgeItem(self.request, original, edited)
        return VerifyItem(self.request, original, edited, self.principles)


def _read_traces(run_folder: Path) -> list[dict[str, Any]]:
    from inference.pipeline import read_traces

    traces = list(read_traces(run_folder))
    if not traces:
        raise ValueError(f"no traces (<id>.json) in run folder {run_folder}")
    return traces


def _load_judged(path: str | os.PathLike) -> Image.Image:
    """An image to judge, through the one loader; no fitness check: the pipeline's input passed it,
    and an editor's output is judged as it came."""
    return load_rgb(path, check=False)


def _result_fields(result: Judgement | Verification) -> dict[str, Any]:
    fields = result.score_fields()
    if isinstance(result, Judgement):
        fields["reasoning"] = result.scores.reasoning if result.scores else None
    else:
        fields["verdicts"] = result.to_dict()["verdicts"]
    return fields


def judge_run(
    run_folder: str | os.PathLike,
    scorer: Scorer,
    out_path: str | os.PathLike,
    *,
    benchmark: str,
    evaluator: str | None = None,
    method: str | None = None,
    editor: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    concurrency: int = 1,
    batch_size: int = 8,
    limit: int | None = None,
    progress: bool = True,
    on_batch_done: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Score every trace of a pipeline run folder and write a score file (JSONL) at `out_path`.

    Labels default to the trace (`method` = its mode, `editor` = its editor) and to the judge's
    model id (`evaluator`). Items whose pipeline produced no image are failures, not asked.
    `concurrency` batches of `batch_size` items are in flight at once. Returns the rows written.
    """
    run_folder = Path(run_folder)
    if concurrency < 1 or batch_size < 1:
        raise ValueError(f"concurrency and batch_size must be >= 1, got {concurrency} and {batch_size}")
    cache = JudgeCache(cache_dir if cache_dir is not None else Path(out_path).parent / ".judge_cache")
    remove_stale_temps(Path(out_path).parent, recursive=False, target=Path(out_path).name)
    traces = _read_traces(run_folder)[:limit]
    evaluator = evaluator or scorer.model_id
    sampling = scorer.sampling.to_dict()

    rows: list[dict[str, Any] | None] = [None] * len(traces)
    pending: list[_Pending] = []
    for index, trace in enumerate(traces):
        labels = {
            "id": str(trace["id"]),
            "benchmark": benchmark,
            "editor": editor or str(trace.get("editor") or "unknown"),
            "method": method or str(trace.get("mode") or "unknown"),
            "evaluator": evaluator,
        }
        if not trace.get("output_image"):
            rows[index] = labels | failed_fields(f"no edited image (pipeline error: {trace.get('error')})")
            continue
        try:
            original, edited = _load_judged(trace["input_image"]), _load_judged(trace["output_image"])
        except (OSError, KeyError, BadImage) as exc:  # BadImage: missing, corrupt, a bomb
            rows[index] = labels | failed_fields(f"cannot load images: {type(exc).__name__}: {exc}")
            continue
        request = str(trace["instruction"])
        principles = None
        if isinstance(scorer, PrincipleVerifier):
            parsed = (trace.get("decomposition") or {}).get("parsed")
            try:
                principles = tuple(principles_for(request, plan=trace.get("plan"), decomposition=parsed))
            except ValueError as exc:  # a malformed parsed decomposition: fall back to the request
                log.warning("item %s: %s; verifying against the request as a whole", labels["id"], exc)
                principles = tuple(principles_for(request))
            prompt = scorer.prompt(request, principles)
        else:
            prompt = scorer.prompt(request)
        key = cache_key(scorer.model_id, prompt, [image_hash(original), image_hash(edited)], sampling)
        entry = cache.get(key)
        if entry is not None:
            rows[index] = labels | dict(entry["fields"])
            continue
        rows[index] = labels
        pending.append(_Pending(index, key, request, trace["input_image"], trace["output_image"], principles))

    def run_batch(batch: list[_Pending]) -> list[Judgement | Verification]:
        items = [p.item() for p in batch]
        if isinstance(scorer, PrincipleVerifier):
            return scorer.verify_many(items)
        return scorer.judge_many(items)

    batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
    bar = tqdm(
        total=len(traces),
        initial=len(traces) - len(pending),
        desc=f"judge {run_folder.name}",
        disable=not progress,
    )
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = {pool.submit(run_batch, b): b for b in batches}
        for future in as_completed(futures):
            batch = futures[future]
            for p, result in zip(batch, future.result(), strict=True):
                fields = _result_fields(result)
                rows[p.index] = rows[p.index] | fields
                if result.ok:
                    cache.put(p.key, {"fields": fields, "answers": result.answers, "model": scorer.model_id})
            bar.update(len(batch))
            if on_batch_done is not None:
                on_batch_done(len(batch))
    finally:  # done, or stopping: finish the batches in flight (a dead server's fail at once), drop the rest
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    done = [r for r in rows if r is not None]
    write_scores(out_path, done)
    failed = sum(r["error"] is not None for r in done)
    log.info(
        "judged %d items (%d from cache, %d failed) -> %s",
        len(done),
        len(traces) - len(pending),
        failed,
        out_path,
    )
    return done


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and the mean total of successful rows (for the CLI's one-line summary)."""
    rows = list(rows)
    ok = [r["total"] for r in rows if r["error"] is None]
    return {
        "items": len(rows),
        "judged": len(ok),
        "failed": len(rows) - len(ok),
        "mean_total": sum(ok) / len(ok) if ok else None,
    }
