"""Benchmark of the editing pipeline on CPU with the tiny models (`python -m inference.bench`).

1. The pipeline's own overhead (image loading and checks, prompts, parsing, PNG and trace writes,
   bookkeeping) against the time spent inside the models (`ChatBackend.chat` + `Editor.edit`),
   per mode, with the transformers backend and the tiny FLUX.1-Kontext pipeline; and the pure
   overhead path (ground-truth agents + tool editor: no neural model at all).
2. Decomposition throughput, batched vs one by one (transformers backend, tiny Qwen2.5-VL).

Prints a table and writes outputs/bench/inference.json. Times are wall-clock on whatever CPU runs it.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from inference.chat import ChatBackend, ChatResult, Conversation, Sampling
from inference.editors import Editor


class TimedBackend(ChatBackend):
    """Delegates to a backend and adds up the seconds spent inside it."""

    def __init__(self, inner: ChatBackend):
        self.inner, self.model_id, self.seconds = inner, inner.model_id, 0.0

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[ChatResult]:
        t0 = time.perf_counter()
        try:
            return self.inner.chat(conversations, sampling)
        finally:
            self.seconds += time.perf_counter() - t0

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        t0 = time.perf_counter()
        try:
            return self.inner.generate(conversations, sampling)
        finally:
            self.seconds += time.perf_counter() - t0


class TimedEditor(Editor):
    """Delegates to an editor and adds up the seconds spent inside it."""

    def __init__(self, inner: Editor):
        self.inner, self.name, self.model_id, self.seconds = inner, inner.name, inner.model_id, 0.0

    def edit(self, image, instruction, seed=0):
        t0 = time.perf_counter()
        try:
            return self.inner.edit(image, instruction, seed)
        finally:
            self.seconds += time.perf_counter() - t0

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()


def bench_overhead(
    work: Path, teach_set: Path, vlm: Path, flux_dir: Path, n_items: int, batch_size: int
) -> list[dict[str, Any]]:
    from inference.agents import DecompositionAgent, VLMSequencer
    from inference.chat_backends import make_backend
    from inference.editors import make_editor
    from inference.pipeline import (
        EditingPipeline,
        OracleDecomposer,
        OracleSequencer,
        load_image,
    )
    from inference.records import read_records

    # Every item is the taught one under its own id: each goes through the whole path.
    taught = next(read_records(teach_set))
    items = [replace(taught, id=f"{taught.id}-copy{k:03d}") for k in range(n_items)]
    sampling = Sampling(temperature=0.0, max_new_tokens=96)
    backend = TimedBackend(make_backend("transformers", vlm, batch_size=batch_size))
    flux = TimedEditor(
        make_editor(
            "flux_kontext", model=flux_dir, resolution="input", num_inference_steps=2, max_sequence_length=128
        )
    )
    agents = DecompositionAgent(backend, sampling, max_attempts=2), VLMSequencer(backend, sampling, 2)
    warm = load_image(items[0].image)
    flux.edit(warm, "warm up", 0)  # first calls pay one-off initialisation: not what we measure
    agents[0].decompose([warm], [items[0].instruction], [0])
    rows = []
    configs = [("original", flux, (None, None)), ("single", flux, agents), ("multi", flux, agents)]
    tool = TimedEditor(make_editor("tool"))
    configs.append(("single", tool, (OracleDecomposer(), OracleSequencer())))
    for mode, editor, (decomposer, sequencer) in configs:
        backend.seconds = editor.seconds = 0.0
        pipe = EditingPipeline(editor, decomposer, sequencer, batch_size=batch_size)
        out = work / f"run-{editor.name}"
        t0 = time.perf_counter()
        summary = pipe.run(items, out, mode, progress=False)
        wall = time.perf_counter() - t0
        model = backend.seconds + editor.seconds
        rows.append(
            {
                "mode": mode,
                "editor": editor.name,
                "agents": "ground_truth"
                if isinstance(decomposer, OracleDecomposer)
                else ("vlm" if decomposer else "-"),
                "items": summary.done,
                "failed": summary.failed,
                "wall_s": wall,
                "llm_s": backend.seconds,
                "editor_s": editor.seconds,
                "overhead_s": wall - model,
                "overhead_ms_per_item": 1000 * (wall - model) / max(1, summary.done),
                "overhead_fraction": (wall - model) / wall if wall else 0.0,
            }
        )
    return rows


def bench_decomposition(
    vlm: Path, n_items: int, batch_sizes: Sequence[int], tokens: int, repeats: int = 2
) -> list[dict[str, Any]]:
    """Items/s of `DecompositionAgent.decompose` over distinct synthetic requests. Every answer is
    exactly `tokens` long (min_new_tokens = max_new_tokens), so each batch size does the same work."""
    from inference.agents import DecompositionAgent
    from inference.chat_backends import make_backend
    from inference.synthetic_items import generate_items

    items = list(generate_items(n_items, seed=1, max_edits=3))
    images, requests = [it.image for it in items], [it.request for it in items]
    seeds = list(range(n_items))
    sampling = Sampling(temperature=0.0, max_new_tokens=tokens)
    backend = make_backend("transformers", vlm, batch_size=1, generation_kwargs={"min_new_tokens": tokens})
    DecompositionAgent(backend, sampling, max_attempts=1).decompose(
        images[:2], requests[:2], seeds[:2]
    )  # warm-up
    rows = []
    for bs in batch_sizes:
        backend.batch_size = bs
        agent = DecompositionAgent(backend, sampling, max_attempts=1)
        wall = float("inf")
        for _ in range(repeats):  # best of `repeats`: the CPU is shared, noise only ever adds time
            t0 = time.perf_counter()
            agent.decompose(images, requests, seeds)
            wall = min(wall, time.perf_counter() - t0)
        rows.append(
            {
                "batch_size": bs,
                "items": n_items,
                "new_tokens": tokens,
                "seconds": wall,
                "items_per_s": n_items / wall,
                "tokens_per_s": n_items * tokens / wall,
            }
        )
    base = rows[0]["items_per_s"]
    for r in rows:
        r["speedup_vs_batch_1"] = r["items_per_s"] / base
    return rows


def _table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.rjust(w) for x, w in zip(xs, widths, strict=True))  # noqa: E731
    return "\n".join([line(cols), *(line(x) for x in cells)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=8, help="items per pipeline run")
    parser.add_argument("--decompose-items", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32, help="answer length in the throughput test")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/inference.json"))
    args = parser.parse_args(argv)

    import torch

    from inference.synthetic_items import write_synthetic_eval_set
    from inference.teaching import taught_on_first_item
    from inference.tiny import build_tiny_flux_kontext, build_tiny_vlm

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inference-bench-") as tmp:
        work = Path(tmp)
        base_vlm = build_tiny_vlm(work / "tiny" / "vlm")
        flux_dir = build_tiny_flux_kontext(work / "tiny" / "flux_kontext")
        # A tiny VLM taught one item's answers: it writes parseable text of realistic length
        # (a random one emits garbage until max_new_tokens and fails to parse).
        teach_set = write_synthetic_eval_set(work / "teach", 1, seed=0, max_edits=2)
        _, vlm = taught_on_first_item(teach_set, base_vlm)
        overhead = bench_overhead(work, teach_set, vlm, flux_dir, args.items, args.batch_size)
        decomposition = bench_decomposition(
            base_vlm, args.decompose_items, sorted({1, 4, args.batch_size}), args.new_tokens
        )
    result = {
        "machine": {"platform": platform.platform(), "torch_threads": torch.get_num_threads()},
        "pipeline_overhead": overhead,
        "decomposition_throughput": decomposition,
        "total_s": time.perf_counter() - t_start,
    }
    print("Pipeline overhead vs time inside the models (tiny models, CPU)")
    print(
        _table(
            overhead,
            [
                "mode",
                "editor",
                "agents",
                "items",
                "failed",
                "wall_s",
                "llm_s",
                "editor_s",
                "overhead_ms_per_item",
                "overhead_fraction",
            ],
        )  # fmt: skip
    )
    print(
        f"\nDecomposition throughput, transformers backend (tiny Qwen2.5-VL, {args.new_tokens} new tokens each)"
    )
    cols = ["batch_size", "items", "seconds", "items_per_s", "tokens_per_s", "speedup_vs_batch_1"]
    print(_table(decomposition, cols))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from inference.fileio import write_json

    write_json(args.out, result)
    print(f"\nwrote {args.out} ({result['total_s']:.1f}s)")
    return result


if __name__ == "__main__":
    main()
