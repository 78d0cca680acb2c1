"""The three-agent pipeline (decompose -> sequence -> edit) over batches, with resume and traces.

Modes (paper Section 4 and Figure 5):
  * `original`: the request goes straight to the editor (the baseline);
  * `single`: all sub-requests in one editor call (`single_turn_instruction`, the paper's best);
  * `multi`: one editor call per sub-request, each on the previous output.

A run folder `<out>/<mode>/` holds, per item, `<id>.png` (PNG text chunks kept) and `<id>.json`, the
trace (see README). Both are written atomically, the trace last: an item is done exactly when its
trace exists, so a killed run restarts where it stopped with no duplicate and no missing item.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from inference import fileio
from inference.agents import AgentResult, DecompositionAgent, Sequencer
from inference.editors import Editor, EditorError
from inference.fileio import BadImage
from inference.http_client import ServerDown
from inference.protocol import EditPlan, single_turn_instruction
from inference.records import Record

log = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("original", "single", "multi")
#: Largest input accepted by default (pixels); bigger images are refused, not resized.
MAX_IMAGE_PIXELS = fileio.DEFAULT_MAX_PIXELS


class InputError(ValueError):
    """An item that cannot be processed as given (image or request)."""


def item_seed(seed: int, item_id: str) -> int:
    """Per-item seed from the run seed and the id: results do not depend on order, batch or resume."""
    digest = hashlib.sha256(f"{seed}/{item_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def file_stem(item_id: str) -> str:
    """A file name for an id (percent-encoded where needed, so distinct ids never collide)."""
    if not isinstance(item_id, str) or not item_id.strip() or item_id in (".", ".."):
        raise InputError(f"item id must be a non-empty name, got {item_id!r}")
    stem = urllib.parse.quote(item_id, safe="-_.")
    if stem.startswith("."):  # no hidden files
        stem = "%2E" + stem[1:]
    if len(stem) > 200:
        raise InputError(f"item id too long for a file name ({len(stem)} chars): {item_id[:80]!r}...")
    return stem


def load_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open an input image as RGB through the one loader (`inference.fileio.load_image`: EXIF
    orientation, alpha on white, 16-bit, bombs refused from the header, the models' size limits),
    keeping PNG text chunks in `info` (synthetic scenes ride there).

    Raises InputError whose message starts with the same reason code data_prep counts
    (`missing_file`, `corrupt_image`, `decompression_bomb`, `image_too_small`, ...) and names the file.
    """
    try:
        return fileio.load_image(path, max_pixels=max_pixels)[0]
    except BadImage as exc:
        raise InputError(str(exc)) from None


def _err(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, (InputError, EditorError)) else f"{type(exc).__name__}: {exc}"


class OracleDecomposer:
    """The ground-truth decomposition of each item (upper bound; needs records with `decomposition`)."""

    name = "ground_truth"
    model_id = "ground_truth"

    def decompose_items(self, items: Sequence[Record]) -> list[AgentResult]:
        out = []
        for it in items:
            d = it.decomposition
            err = None if d is not None else f"ground_truth: item {it.id!r} has no ground-truth decomposition"
            out.append(AgentResult(raw=None, parsed=d, attempts=0, format_ok=d is not None, error=err))
        return out


class OracleSequencer:
    """The ground-truth plan of each item (needs records with `plan`)."""

    name = "ground_truth"
    model_id = "ground_truth"

    def sequence_items(self, items: Sequence[Record]) -> list[AgentResult]:
        out = []
        for it in items:
            p = it.plan
            err = None if p is not None else f"ground_truth: item {it.id!r} has no ground-truth plan"
            out.append(AgentResult(raw=None, parsed=p, attempts=0, format_ok=p is not None, error=err))
        return out


def _decomposition_trace(result: AgentResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    parsed = result.parsed
    return {
        "raw": result.raw,
        "parsed": None if parsed is None else {**parsed.to_ground_truth(), "think": parsed.think},
        "format_ok": bool(result.format_ok),
        "attempts": result.attempts,
    }


@dataclass
class RunSummary:
    run_dir: Path
    done: int = 0
    failed: int = 0
    skipped: int = 0
    #: Of the skipped: items whose earlier trace holds an error (redone only with retry_errors).
    skipped_failed: int = 0
    duplicates: int = 0
    invalid: int = 0
    seconds: float = 0.0

    @property
    def usable(self) -> int:
        """Items of the input with an error-free trace now (this run's and earlier runs')."""
        return self.done - self.failed + self.skipped - self.skipped_failed


class EditingPipeline:
    """Decompose -> sequence -> edit, batched over items, one trace per item.

    `decomposer` is a `DecompositionAgent` or `OracleDecomposer`; `sequencer` a `VLMSequencer`,
    `TemplateSequencer` or `OracleSequencer`. Both may be None for mode `original` only.
    Same items, seed and batch size give the same outputs (per-item seeds derive from the id).
    """

    def __init__(
        self,
        editor: Editor,
        decomposer: DecompositionAgent | OracleDecomposer | None = None,
        sequencer: Sequencer | OracleSequencer | None = None,
        seed: int = 0,
        batch_size: int = 8,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        edit_workers: int = 1,
    ):
        self.editor = editor
        self.decomposer = decomposer
        self.sequencer = sequencer
        self.seed = int(seed)
        self.batch_size = max(1, int(batch_size))
        self.max_image_pixels = max_image_pixels
        #: Concurrent editor calls within a batch (>1 only for hosted editors; a GPU editor wants 1).
        self.edit_workers = max(1, int(edit_workers))
        #: (stage, item id) -> (agent result, seconds): answers shared by the modes of one pipeline
        self._agent_results: dict[tuple[str, str], tuple[AgentResult, float]] = {}

    # ------------------------------------------------------------------ model records

    def models(self, mode: str) -> dict[str, Any]:
        out: dict[str, Any] = {"editor": self.editor.model_id, "editor_settings": self.editor.settings()}
        if mode != "original":
            for role, agent in (("decomposition", self.decomposer), ("sequencing", self.sequencer)):
                if agent is None:
                    out[role] = None
                    continue
                backend = getattr(agent, "backend", None)
                out[role] = getattr(backend, "model_id", None) or getattr(agent, "model_id", agent.name)
                out[f"{role}_agent"] = agent.name
                if backend is not None:  # the engine, not the answer journal around it
                    out[f"{role}_backend"] = type(getattr(backend, "backend", backend)).__name__
                if getattr(agent, "sampling", None) is not None:
                    out[f"{role}_sampling"] = agent.sampling.to_dict()
        return out

    # ------------------------------------------------------------------ the stages

    def _decompose(self, items: Sequence[Record], images: Sequence[Image.Image]) -> list[AgentResult]:
        if self.decomposer is None:
            raise ValueError("modes single/multi need a decomposition agent")
        if isinstance(self.decomposer, OracleDecomposer):
            return self.decomposer.decompose_items(items)
        seeds = [item_seed(self.seed, it.id) for it in items]
        return self.decomposer.decompose(images, [it.instruction for it in items], seeds)

    def _sequence(self, items, images, decompositions) -> list[AgentResult]:
        if self.sequencer is None:
            raise ValueError("modes single/multi need a sequencing agent")
        if isinstance(self.sequencer, OracleSequencer):
            return self.sequencer.sequence_items(items)
        seeds = [item_seed(self.seed + 1, it.id) for it in items]
        return self.sequencer.sequence(images, [it.instruction for it in items], decompositions, seeds)

    def _edit(self, mode: str, image: Image.Image, item: Record, plan: EditPlan | None) -> Image.Image:
        seed = item_seed(self.seed, item.id)
        if mode == "original":
            return self.editor.edit(image, item.instruction, seed)
        if mode == "single":
            return self.editor.edit(image, single_turn_instruction(plan), seed)
        out = image
        n = len(plan.sub_requests)
        for step, sub_request in enumerate(plan.sub_requests):
            try:
                out = self.editor.edit(out, sub_request, seed + step)
            except Exception as exc:  # noqa: BLE001 - name the step that failed
                raise EditorError(
                    f"step {step + 1}/{n} {sub_request!r}: {type(exc).__name__}: {exc}"
                ) from exc
        return out

    def process(
        self, items: Sequence[Record], mode: str
    ) -> Iterator[tuple[Record, Image.Image | None, dict]]:
        """Run one batch; yield (item, edited image or None, trace without output paths) per item."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
        t_batch = time.perf_counter()
        n = len(items)
        traces = [self._trace(it, mode) for it in items]
        images: list[Image.Image | None] = [None] * n
        for i, it in enumerate(items):
            t0 = time.perf_counter()
            try:
                if not isinstance(it.instruction, str) or not it.instruction.strip():
                    raise InputError(f"empty edit request for item {it.id!r}")
                images[i] = load_image(it.image, self.max_image_pixels)
            except Exception as exc:  # noqa: BLE001 - a bad item never stops the batch
                traces[i]["error"] = _err(exc)
            traces[i]["timings"]["load_s"] = time.perf_counter() - t0

        plans: list[EditPlan | None] = [None] * n
        if mode != "original":
            ok = [i for i in range(n) if images[i] is not None and traces[i]["error"] is None]
            decomp = self._agent_stage(
                "decompose",
                ok,
                traces,
                lambda idx: self._decompose([items[i] for i in idx], [images[i] for i in idx]),
            )
            ok = [i for i in ok if decomp.get(i) is not None]
            planned = self._agent_stage(
                "sequence",
                ok,
                traces,
                lambda idx: self._sequence(
                    [items[i] for i in idx], [images[i] for i in idx], [decomp[i] for i in idx]
                ),
            )
            for i, plan in planned.items():
                if plan is not None and not plan.sub_requests and traces[i]["error"] is None:
                    traces[i]["error"] = "sequence: the plan has no sub-requests"
                    plan = None
                plans[i] = plan
                if plan is not None:
                    traces[i]["plan"] = list(plan.sub_requests)

        def edit(i: int) -> Image.Image | None:
            if images[i] is None or traces[i]["error"] is not None:
                return None
            if mode != "original" and plans[i] is None:
                return None
            t0 = time.perf_counter()
            try:
                return self._edit(mode, images[i], items[i], plans[i])
            except ServerDown:
                raise  # a dead editor endpoint stops the run (no failed traces to skip later)
            except EditorError as exc:
                if isinstance(exc.__cause__, ServerDown):  # a multi-turn step met the dead endpoint
                    raise exc.__cause__ from None
                traces[i]["error"] = f"editor {self.editor.name}: {_err(exc)}"
                return None
            except Exception as exc:  # noqa: BLE001
                traces[i]["error"] = f"editor {self.editor.name}: {_err(exc)}"
                return None
            finally:
                traces[i]["timings"]["edit_s"] = time.perf_counter() - t0

        if self.edit_workers > 1 and n > 1:  # hosted editors: several requests in flight
            with ThreadPoolExecutor(max_workers=self.edit_workers) as pool:
                outputs = list(pool.map(edit, range(n)))
            for i, it in enumerate(items):
                yield it, outputs[i], traces[i]
        else:  # local editors: one at a time, each item written as soon as it is done
            for i, it in enumerate(items):
                yield it, edit(i), traces[i]
        log.debug("batch of %d in %.2fs", n, time.perf_counter() - t_batch)

    def _agent_stage(self, stage: str, idx: list[int], traces: list[dict], call) -> dict[int, Any]:
        """Run an agent on items `idx`; record raw answers, errors and amortised time; return the parses."""
        if not idx:
            return {}
        # Agent answers depend only on (item, run seed), not on the mode: a run over several modes asks
        # each agent once per item and reuses the answer for the other modes, whose traces record
        # no time for that stage and name it under "reused".
        memo = self._agent_results
        todo = [i for i in idx if (stage, traces[i]["id"]) not in memo]
        fresh: dict[int, tuple[AgentResult, float]] = {}
        if todo:
            t0 = time.perf_counter()
            remember = True
            try:
                results = call(todo)
            except ServerDown:
                raise  # a dead server stops the run: no failed trace to skip on the rerun
            except Exception as exc:  # noqa: BLE001 - a whole-stage failure is every item's error
                remember = False  # e.g. a backend outage: ask again for the next mode
                results = [
                    AgentResult(raw=None, parsed=None, attempts=0, error=f"{stage}: {_err(exc)}")
                ] * len(todo)
            share = (time.perf_counter() - t0) / len(todo)
            fresh = {i: (res, share) for i, res in zip(todo, results, strict=True)}
            if remember:
                memo.update({(stage, traces[i]["id"]): answer for i, answer in fresh.items()})
        parsed = {}
        for i in idx:
            if i in fresh:
                res, share = fresh[i]
            else:  # answered for an earlier mode of this run: no time spent now
                (res, _), share = memo[(stage, traces[i]["id"])], 0.0
                traces[i].setdefault("reused", []).append(stage)
            traces[i]["timings"][f"{stage}_s"] = share
            parsed[i] = res.parsed
            if stage == "decompose":
                traces[i]["decomposition"] = _decomposition_trace(res)
            else:
                traces[i]["sequencing"] = {"raw": res.raw, "attempts": res.attempts}
            if res.error and traces[i]["error"] is None:
                traces[i]["error"] = res.error
        return parsed

    def _trace(self, item: Record, mode: str) -> dict[str, Any]:
        return {
            "id": item.id,
            "mode": mode,
            "instruction": item.instruction,
            "input_image": str(Path(item.image).resolve()),
            "output_image": None,
            "decomposition": None,
            "plan": None,
            "editor": self.editor.name,
            "models": self.models(mode),
            "seed": item_seed(self.seed, item.id),
            "run_seed": self.seed,
            "timings": {},
            "error": None,
        }

    # ------------------------------------------------------------------ batch runs

    def run(
        self,
        items: Iterable[Record],
        out_dir: str | Path,
        mode: str,
        retry_errors: bool = False,
        progress: bool = True,
    ) -> RunSummary:
        """Process every item not already done in `<out_dir>/<mode>/`; returns counts."""
        from tqdm.auto import tqdm

        t_start = time.perf_counter()
        run_dir = Path(out_dir) / mode
        run_dir.mkdir(parents=True, exist_ok=True)
        fileio.remove_stale_temps(run_dir, recursive=False)  # left by a run killed mid-write
        done = done_ids(run_dir, retry_errors=retry_errors)
        done_ok = done if retry_errors else done_ids(run_dir, retry_errors=True)
        summary = RunSummary(run_dir=run_dir)
        seen: set[str] = set()
        pending: list[Record] = []
        for it in items:
            try:
                stem = file_stem(it.id)
            except InputError as exc:  # no trace can be named after it: report, go on
                summary.invalid += 1
                log.error("skipping an item: %s", exc)
                continue
            if stem in seen:
                summary.duplicates += 1
                log.warning("duplicate item id %r in the input: kept the first", it.id)
                continue
            seen.add(stem)
            if stem in done:
                summary.skipped += 1
                summary.skipped_failed += stem not in done_ok
            else:
                pending.append(it)
        bar = tqdm(total=len(pending), desc=f"{mode}", unit="item", disable=not progress)
        for start in range(0, len(pending), self.batch_size):
            for item, image, trace in self.process(pending[start : start + self.batch_size], mode):
                write_item(run_dir, item, image, trace)
                summary.failed += trace["error"] is not None
                summary.done += 1
                bar.update(1)
        bar.close()
        summary.seconds = time.perf_counter() - t_start
        return summary


def write_item(run_dir: Path, item: Record, image: Image.Image | None, trace: dict[str, Any]) -> Path:
    """Save `<id>.png` (if any) then `<id>.json`, each atomically; the trace marks the item done."""
    from inference.fileio import save_png, write_json

    stem = file_stem(item.id)
    t0 = time.perf_counter()
    png = run_dir / f"{stem}.png"
    if image is not None:
        try:
            save_png(image, png)
            trace["output_image"] = str(png.resolve())
        except Exception as exc:  # noqa: BLE001
            trace["error"] = trace["error"] or f"saving the output failed: {_err(exc)}"
    else:
        png.unlink(missing_ok=True)  # an output of an earlier, retried attempt
    timings = trace["timings"]
    timings["save_s"] = time.perf_counter() - t0
    timings["total_s"] = sum(v for k, v in timings.items() if k != "total_s")
    return write_json(run_dir / f"{stem}.json", trace)


def done_ids(run_dir: str | Path, retry_errors: bool = False) -> set[str]:
    """File stems of the items with a trace in `run_dir` (those with an error too, unless `retry_errors`)."""
    out = set()
    for path in Path(run_dir).glob("*.json"):
        if retry_errors:
            try:
                if json.loads(path.read_text(encoding="utf-8")).get("error") is not None:
                    continue
            except (OSError, ValueError):
                continue
        out.add(path.stem)
    return out


def read_traces(run_folder: str | Path) -> Iterator[dict[str, Any]]:
    """Every trace of a run folder (`<out>/<mode>/`), sorted by file name."""
    for path in sorted(Path(run_folder).glob("*.json")):
        with path.open(encoding="utf-8") as fh:
            yield json.load(fh)
