"""`make app` / `python -m app`: the three agents in a local web app (Gradio, 127.0.0.1).

Pick a built-in example or upload an image and type a request; the decomposition agent's answer
streams in (reasoning, then actions, subjects and goals as editable lists); the sequencing agent
orders them into sub-requests, which you can add, remove, reorder and reword; the editor runs the
(edited) plan single- or multi-turn (every intermediate image shown) beside the raw request (mode
`original`); built-in examples are checked against their exact target, and a judge (the paper's
rubric) or the principle-wise verifier can score the result; the edited images, traces and scores
can be downloaded.

There is no second implementation of anything here: the agents and the editor are the ones
`python -m inference` builds from the same flags (`inference.cli.build_pipeline`), every run is an
`EditingPipeline.run` whose trace is the batch CLI's (byte for byte the same fields for the same
inputs and seed; a plan edited by hand is recorded as agent `<name>+edited`), scores come from
`eval.batch.judge_run` and `eval.reference.score_run_against_references`. Everything is written
under `--out`, Gradio's uploads and caches included.

Embedded default (no GPU, no network): the decomposer `make demo` trained when it exists, else a
randomly initialised tiny model (a plain notice says so), the template sequencer and the exact tool
editor on synthetic scenes. Any checkpoint, served model, editor or judge by flag.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.pipeline import MAX_IMAGE_PIXELS, MODES, InputError

DEFAULT_OUT = Path("outputs/app")
#: Where `make demo` writes (recipes/demo.py `--out`): its GRPO checkpoint and held-out examples.
DEFAULT_DEMO_DIR = Path("outputs/demo")
#: The demo's answer budget (recipes/demo.py runs the pipeline with --max-new-tokens 64).
EMBEDDED_MAX_NEW_TOKENS = 64
CLI_MAX_NEW_TOKENS = 512
#: Built-in examples generated when no demo eval set exists (inference.synthetic_items; 1-3 edits each).
BUILTIN_EXAMPLES = 8
BUILTIN_SEED = 2024
MAX_EXAMPLES_LISTED = 32
EDITED_SUFFIX = "+edited"

TOY_NOTICE = (
    "**Decomposer: a randomly initialised tiny Qwen2.5-VL (a toy model).** No trained checkpoint was "
    "found (run `make demo` first, or start the app with `--llm-model DIR`). Its answers are noise and "
    "usually unparseable: type the actions, subjects and goals yourself to drive the sequencer and "
    "the editor."
)
DEMO_NOTICE = (
    "**Decomposer: the tiny Qwen2.5-VL trained by `make demo`** (SFT cold start + GRPO on synthetic "
    "scenes, `{path}`). A toy of the 7B recipe: it knows only the synthetic shape scenes."
)
GIVEN_NOTICE = "**Decomposer:** `{model}` ({backend} backend)."


# ---------------------------------------------------------------------------------------- flags


def build_parser() -> argparse.ArgumentParser:
    """The app's flags; pipeline flags have the names and meaning of `python -m inference`'s."""
    p = argparse.ArgumentParser(
        prog="python -m app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="every file the app writes goes here")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default: the first free one from 7860)")
    p.add_argument("--examples", type=Path, help="a data_prep records folder to offer as examples")
    p.add_argument("--demo-dir", type=Path, default=DEFAULT_DEMO_DIR, help="where `make demo` wrote")
    p.add_argument("--max-upload-mb", type=float, default=50.0)
    g = p.add_argument_group("pipeline (as python -m inference)")
    g.add_argument(
        "--editor", default="tool", help="tool, flux_kontext, qwen_image_edit, openai_images, gemini"
    )
    g.add_argument("--editor-model", help="editor model (folder or hub id); default from the editor config")
    g.add_argument("--editor-opt", action="append", metavar="KEY=VALUE", help="editor setting override")
    g.add_argument("--backend", default="transformers", help="transformers, vllm, openai, gemini")
    g.add_argument(
        "--llm-model", help="decomposition/sequencing VLM (default: the demo's checkpoint, else a tiny toy)"
    )
    g.add_argument("--llm-opt", action="append", metavar="KEY=VALUE", help="backend constructor keyword")
    g.add_argument("--decomposer", choices=("model", "ground_truth"), default="model")
    g.add_argument("--sequencer", choices=("template", "vlm", "ground_truth"), default="template")
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument(
        "--max-new-tokens",
        type=int,
        help=f"default {EMBEDDED_MAX_NEW_TOKENS} for the embedded models, else {CLI_MAX_NEW_TOKENS}",
    )
    g.add_argument("--max-attempts", type=int, default=3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS)
    j = p.add_argument_group("judge (as python -m eval judge; none unless --judge-model is given)")
    j.add_argument("--judge-backend", default="openai", help="transformers, vllm, openai, gemini")
    j.add_argument("--judge-model", help="judge model: API name, hub id or local folder")
    j.add_argument("--judge-base-url", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1")
    j.add_argument("--judge-api-key-env", help="variable holding the API key ('' for none)")
    j.add_argument("--judge-device", help="transformers judge device")
    j.add_argument("--judge-retries", type=int, default=2)
    j.add_argument("--judge-max-new-tokens", type=int, default=512)
    j.add_argument("--judge-temperature", type=float, default=0.0)
    return p


def _pipeline_namespace(args: argparse.Namespace, llm_model: str) -> argparse.Namespace:
    """What `inference.cli.build_pipeline` reads, from the app's flags (one item at a time)."""
    return argparse.Namespace(
        editor=args.editor,
        editor_model=args.editor_model,
        editor_opt=args.editor_opt,
        backend=args.backend,
        llm_model=llm_model,
        llm_opt=args.llm_opt,
        decomposer=args.decomposer,
        sequencer=args.sequencer,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        max_attempts=args.max_attempts,
        seed=args.seed,
        batch_size=1,
        max_image_pixels=args.max_image_pixels,
        edit_workers=1,
    )


def _judge_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """What `eval.cli.make_scorer` reads (the `python -m eval judge` flags)."""
    return argparse.Namespace(
        backend=args.judge_backend,
        model=args.judge_model,
        base_url=args.judge_base_url,
        api_key_env=args.judge_api_key_env,
        device=args.judge_device,
        temperature=args.judge_temperature,
        max_new_tokens=args.judge_max_new_tokens,
        retries=args.judge_retries,
        scorer="rubric",
    )


def batch_command(
    args: argparse.Namespace, llm_model: str, item: AppItem, modes: Sequence[str], out: Path
) -> list[str]:
    """The `python -m inference` command that reproduces an app run of `item` (unedited plan)."""
    argv = ["--image", str(item.image), "--id", item.id, "--request", item.request, "--out", str(out)]
    for mode in modes:
        argv += ["--mode", mode]
    argv += ["--editor", args.editor]
    if args.editor_model:
        argv += ["--editor-model", args.editor_model]
    for opt in args.editor_opt or []:
        argv += ["--editor-opt", opt]
    if any(m != "original" for m in modes):
        argv += ["--decomposer", args.decomposer, "--sequencer", args.sequencer]
        if args.decomposer == "model" or args.sequencer == "vlm":
            argv += ["--backend", args.backend, "--llm-model", llm_model]
            for opt in args.llm_opt or []:
                argv += ["--llm-opt", opt]
        argv += ["--temperature", str(args.temperature), "--max-new-tokens", str(args.max_new_tokens)]
        argv += ["--max-attempts", str(args.max_attempts)]
    argv += ["--seed", str(args.seed), "--max-image-pixels", str(args.max_image_pixels)]
    return argv


# ---------------------------------------------------------------------------------------- defaults


def default_decomposer(demo_dir: Path, out: Path) -> tuple[str, str, bool]:
    """(model folder, notice, embedded): the demo's exported GRPO model if `make demo` finished it
    (`recipes/demo.py` writes `models/grpo`), else a tiny toy VLM built once under `out`."""
    grpo = demo_dir / "models" / "grpo"
    if (grpo / "config.json").is_file():
        return str(grpo.resolve()), DEMO_NOTICE.format(path=grpo), True
    tiny = out / "tiny_vlm"
    if not (tiny / "config.json").is_file():
        from inference.fileio import atomic_dir
        from inference.tiny import build_tiny_vlm

        with atomic_dir(tiny) as tmp:
            build_tiny_vlm(tmp)
    return str(tiny.resolve()), TOY_NOTICE, True


def default_examples(demo_dir: Path, out: Path) -> Path:
    """The demo's held-out synthetic set when it exists, else a few synthetic items built under `out`."""
    from inference.records import RECORDS_FILE

    demo_eval = demo_dir / "data" / "eval"
    if (demo_eval / RECORDS_FILE).is_file():
        return demo_eval
    folder = out / "examples"
    if not (folder / RECORDS_FILE).is_file():
        from inference.synthetic_items import write_synthetic_eval_set

        write_synthetic_eval_set(folder, BUILTIN_EXAMPLES, seed=BUILTIN_SEED, max_edits=3)
    return folder


# ---------------------------------------------------------------------------------------- items


@dataclass(frozen=True)
class AppItem:
    """The image and request being edited; `records` is set for examples (ground truth, reference)."""

    id: str
    image: Path
    request: str = ""
    source: str = "upload"
    records: Path | None = None
    reference: Path | None = None

    def with_request(self, request: str) -> AppItem:
        return dataclasses.replace(self, request=request)


def lines_of(text: str | None) -> tuple[str, ...]:
    """The non-empty lines of a text box, stripped (one list entry per line)."""
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


# ---------------------------------------------------------------------------------------- wrappers


class GivenAnswer:
    """An agent that answers with what the app already has (the agent's own answer, maybe edited by
    hand), so a run through `EditingPipeline` writes the CLI's trace. Looks like the agent it
    wraps to `EditingPipeline.models` (backend, sampling, model id); `name` gets `+edited` when
    the answer was edited."""

    def __init__(self, agent: Any, result: Any, edited: bool):
        self._agent = agent
        self._result = result
        self.name = agent.name + (EDITED_SUFFIX if edited else "")
        self.model_id = getattr(agent, "model_id", agent.name)
        self.backend = getattr(agent, "backend", None)
        self.sampling = getattr(agent, "sampling", None)

    def decompose(self, images, requests, seeds) -> list[Any]:
        return [self._result] * len(images)

    def sequence(self, images, requests, decompositions, seeds) -> list[Any]:
        return [self._result] * len(images)


class RecordingEditor:
    """The configured editor, keeping every call's instruction and output (multi-turn's steps)."""

    def __init__(self, editor: Any):
        self._editor = editor
        self.name = editor.name
        self.model_id = editor.model_id
        self.calls: list[tuple[str, Any]] = []

    def settings(self) -> dict[str, Any]:
        return self._editor.settings()

    def edit(self, image, instruction: str, seed: int = 0):
        out = self._editor.edit(image, instruction, seed)
        self.calls.append((instruction, out))
        return out


@contextlib.contextmanager
def streaming(backend: Any, on_text: Callable[[str], None] | None) -> Iterator[bool]:
    """Stream a transformers backend's generated text to `on_text` while the block runs.

    Uses the backend's public `generation_kwargs` (extra `generate` arguments) to pass a
    `transformers.TextStreamer`; greedy outputs are the same with or without it. Other backends
    (vLLM, HTTP) answer at once: yields False and streams nothing.
    """
    kwargs = getattr(backend, "generation_kwargs", None)
    tokenizer = getattr(getattr(backend, "processor", None), "tokenizer", None)
    if on_text is None or not isinstance(kwargs, dict) or tokenizer is None:
        yield False
        return
    from transformers import TextStreamer

    class _Streamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            on_text(text + ("\n" if stream_end else ""))

    kwargs["streamer"] = _Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    try:
        yield True
    finally:
        kwargs.pop("streamer", None)


# ---------------------------------------------------------------------------------------- results


@dataclass
class ModeResult:
    """One mode of one app run: its trace (as written), output image, steps, reference and scores."""

    mode: str
    trace: dict[str, Any]
    trace_path: Path
    output: Path | None
    steps: list[tuple[Path, str]] = field(default_factory=list)
    reference: dict[str, Any] | None = None


@dataclass
class RunResult:
    run_dir: Path
    modes: dict[str, ModeResult]
    command: list[str]
    plan: tuple[str, ...]
    decomposition_edited: bool
    plan_edited: bool

    def files(self, main_mode: str) -> list[Path]:
        """Downloads: the main mode's edited image and trace, and a zip of the whole run folder
        (every mode's traces and images, the multi-turn steps, the score files)."""
        main = self.modes[main_mode]
        archive = shutil.make_archive(str(self.run_dir), "zip", root_dir=self.run_dir)
        return ([main.output] if main.output else []) + [main.trace_path, Path(archive)]


def _agent_error(stage: str, exc: BaseException) -> Any:
    from inference.agents import AgentResult

    detail = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
    return AgentResult(raw=None, parsed=None, attempts=0, error=f"{stage}: {detail}")


# ---------------------------------------------------------------------------------------- the app


class EditingApp:
    """What the page does, without the page: load items, ask the agents, run, check, judge.

    Built from the app's flags; holds the configured editor and agents (from
    `inference.cli.build_pipeline`) and the judge. Model calls are serialised by one lock.
    """

    def __init__(self, args: argparse.Namespace):
        from inference.cli import build_pipeline

        self.args = args
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        demo_dir = Path(args.demo_dir).resolve()
        needs_llm = args.decomposer == "model" or args.sequencer == "vlm"
        if args.llm_model:
            self.llm_model, embedded = str(args.llm_model), False
            self.notice = GIVEN_NOTICE.format(model=args.llm_model, backend=args.backend)
        elif needs_llm:
            self.llm_model, self.notice, embedded = default_decomposer(demo_dir, self.out)
        else:
            self.llm_model, embedded = "", False
            self.notice = "**Decomposer:** the ground truth of the examples (`--decomposer ground_truth`)."
        if args.max_new_tokens is None:
            args.max_new_tokens = EMBEDDED_MAX_NEW_TOKENS if embedded else CLI_MAX_NEW_TOKENS
        self.examples_dir = Path(args.examples) if args.examples else default_examples(demo_dir, self.out)
        self.examples = self._read_examples(self.examples_dir)
        self.pipeline = build_pipeline(_pipeline_namespace(args, self.llm_model), list(MODES))
        self.lock = threading.Lock()
        self._scorers: dict[str, Any] = {}
        self._run_counter = 0

    # ------------------------------------------------------------------ items

    @staticmethod
    def _read_examples(folder: Path) -> dict[str, Any]:
        from inference.records import read_records

        out = {}
        for record in read_records(folder):
            out[record.id] = record
            if len(out) >= MAX_EXAMPLES_LISTED:
                break
        if not out:
            raise ValueError(f"no examples in {folder} (records.jsonl is empty)")
        return out

    def example_choices(self) -> list[tuple[str, str]]:
        return [(f"{rid}: {r.instruction}", rid) for rid, r in self.examples.items()]

    def example_item(self, example_id: str) -> AppItem:
        record = self.examples.get(example_id)
        if record is None:
            raise InputError(f"no example {example_id!r}; choose one of {sorted(self.examples)}")
        return AppItem(
            id=record.id,
            image=Path(record.image),
            request=record.instruction,
            source=record.source,
            records=self.examples_dir,
            reference=Path(record.references[0]) if record.references else None,
        )

    def upload_item(self, path: str | Path) -> AppItem:
        """Check an upload with the shared image loader, then keep a copy under `out/inputs/`."""
        from inference.pipeline import file_stem

        path = Path(path)
        self.load_image(path)  # size, bomb, mode and truncation checks before anything else
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        keep = self.out / "inputs" / digest / path.name
        if not keep.is_file():
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, keep)
        item_id = path.stem
        file_stem(item_id)  # an id that cannot name a trace file is refused here, not mid-run
        return AppItem(id=item_id, image=keep)

    def load_image(self, path: str | Path):
        from inference.pipeline import load_image

        return load_image(path, self.args.max_image_pixels)

    def _pipeline_item(self, item: AppItem):
        from inference.records import Record

        if not item.request.strip():
            raise InputError("type an edit request first")
        record = self.examples.get(item.id) if item.records is not None else None
        return Record(
            id=item.id,
            source=item.source,
            instruction=item.request,
            image=item.image,
            decomposition=record.decomposition if record else None,
            plan=record.plan if record else None,
        )

    # ------------------------------------------------------------------ agents

    def decompose(self, item: AppItem, on_text: Callable[[str], None] | None = None) -> Any:
        """The decomposition agent's `AgentResult` for `item` (errors as its `error`, never raised)."""
        try:
            it = self._pipeline_item(item)
            image = self.load_image(it.image)
            backend = getattr(self.pipeline.decomposer, "backend", None)
            with self.lock, streaming(backend, on_text):
                (result,) = self.pipeline._decompose([it], [image])
            return result
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app goes on
            return _agent_error("decompose", exc)

    def sequence(self, item: AppItem, decomposition: Any) -> Any:
        """The sequencing agent's `AgentResult` for `item` and a (maybe hand-edited) decomposition."""
        try:
            it = self._pipeline_item(item)
            image = self.load_image(it.image)
            with self.lock:
                (result,) = self.pipeline._sequence([it], [image], [decomposition])
            return result
        except Exception as exc:  # noqa: BLE001
            return _agent_error("sequence", exc)

    # ------------------------------------------------------------------ runs

    def _new_run_dir(self) -> Path:
        with self.lock:
            while True:
                self._run_counter += 1
                run_dir = self.out / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{self._run_counter:03d}"
                try:
                    run_dir.mkdir(parents=True)
                    return run_dir
                except FileExistsError:
                    continue

    def run(
        self,
        item: AppItem,
        modes: Sequence[str],
        decomposition: Any = None,
        edited_decomposition: Any = None,
        sequencing: Any = None,
        edited_plan: Sequence[str] | None = None,
        on_mode: Callable[[int, str], None] | None = None,
    ) -> RunResult:
        """Run `modes` on `item` through `EditingPipeline.run` into a new `out/runs/<run>/` folder.

        `decomposition` / `sequencing` are the agents' `AgentResult`s (asked now when None);
        `edited_decomposition` (a `Decomposition`) and `edited_plan` replace their parses, and
        the trace names such an agent `<name>+edited`.
        """
        from inference.agents import AgentResult
        from inference.fileio import save_png
        from inference.pipeline import EditingPipeline, file_stem
        from inference.protocol import EditPlan

        for mode in modes:
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r}; choose from {MODES}")
        it = self._pipeline_item(item)
        base = self.pipeline
        decomposer = sequencer = None
        plan: tuple[str, ...] = ()
        d_edited = p_edited = False
        if any(m != "original" for m in modes):
            if decomposition is None:
                decomposition = self.decompose(item)
            chosen = decomposition.parsed
            if edited_decomposition is not None and edited_decomposition != chosen:
                chosen, d_edited = edited_decomposition, True
            if chosen is None:
                raise InputError(
                    f"no decomposition to run: {decomposition.error or 'the agent gave none'}; "
                    "type the actions, subjects and goals, then run again"
                )
            if sequencing is None:
                sequencing = self.sequence(item, chosen)
            agent_plan = tuple(sequencing.parsed.sub_requests) if sequencing.parsed is not None else None
            plan = tuple(edited_plan) if edited_plan is not None else (agent_plan or ())
            p_edited = edited_plan is not None and tuple(edited_plan) != agent_plan
            if not plan:
                raise InputError(
                    f"no sub-requests to run: {sequencing.error or 'the plan is empty'}; "
                    "type one sub-request per line, then run again"
                )
            d_result = dataclasses.replace(decomposition, parsed=chosen, error=None)
            s_result = AgentResult(
                raw=sequencing.raw,
                parsed=EditPlan(sub_requests=plan),
                attempts=sequencing.attempts,
                format_ok=True,
                error=None,
            )
            decomposer = GivenAnswer(base.decomposer, d_result, d_edited)
            sequencer = GivenAnswer(base.sequencer, s_result, p_edited)
        editor = RecordingEditor(base.editor)
        pipe = EditingPipeline(
            editor,
            decomposer,
            sequencer,
            seed=base.seed,
            batch_size=1,
            max_image_pixels=base.max_image_pixels,
            edit_workers=1,
        )
        run_dir = self._new_run_dir()
        stem = file_stem(it.id)
        results: dict[str, ModeResult] = {}
        for index, mode in enumerate(modes):
            if on_mode is not None:
                on_mode(index, mode)
            editor.calls.clear()
            with self.lock:
                pipe.run([it], run_dir, mode, progress=False)
            trace_path = run_dir / mode / f"{stem}.json"
            trace = json.loads(trace_path.read_text(encoding="utf-8"))
            steps = []
            if mode == "multi":
                for k, (instruction, image) in enumerate(editor.calls, 1):
                    png = save_png(image, run_dir / "steps" / mode / f"{stem}.{k}.png")
                    steps.append((png, f"step {k}: {instruction}"))
            output = Path(trace["output_image"]) if trace.get("output_image") else None
            results[mode] = ModeResult(mode, trace, trace_path, output, steps)
            if item.records is not None and item.reference is not None:
                results[mode].reference = self._reference(run_dir, mode, item.records)
        command = batch_command(self.args, self.llm_model, item, modes, run_dir / "batch")
        return RunResult(run_dir, results, command, plan, d_edited, p_edited)

    def _reference(self, run_dir: Path, mode: str, records: Path) -> dict[str, Any] | None:
        from eval.reference import score_run_against_references

        try:
            rows = score_run_against_references(
                run_dir / mode, records, run_dir / "scores" / f"reference_{mode}.jsonl"
            )
        except Exception as exc:  # noqa: BLE001 - a check, never a reason to lose the run
            return {"error": f"reference check failed: {type(exc).__name__}: {exc}"}
        return rows[0] if rows else None

    # ------------------------------------------------------------------ judge

    @property
    def has_judge(self) -> bool:
        return bool(self.args.judge_model)

    def scorer(self, kind: str) -> Any:
        """The rubric judge or the principle verifier, built once from the judge flags."""
        if kind not in ("rubric", "verifier"):
            raise ValueError(f"unknown scorer {kind!r}; choose rubric or verifier")
        if not self.has_judge:
            raise InputError(
                "no judge configured: start the app with --judge-model (e.g. --judge-backend openai "
                "--judge-model gpt-4o, or --judge-base-url http://127.0.0.1:8000/v1 for a served VLM)"
            )
        if "rubric" not in self._scorers:
            from eval.cli import make_scorer

            self._scorers["rubric"] = make_scorer(_judge_namespace(self.args))
        if kind == "verifier" and "verifier" not in self._scorers:
            from eval.verifier import PrincipleVerifier

            rubric = self._scorers["rubric"]
            self._scorers["verifier"] = PrincipleVerifier(
                rubric.backend, sampling=rubric.sampling, retries=rubric.retries
            )
        return self._scorers[kind]

    def judge(self, run: RunResult, kind: str, benchmark: str) -> dict[str, dict[str, Any]]:
        """Score every mode of `run` with `eval.batch.judge_run`; {mode: score row}."""
        from eval.batch import judge_run

        scorer = self.scorer(kind)
        rows = {}
        for mode in run.modes:
            (row,) = judge_run(
                run.run_dir / mode,
                scorer,
                run.run_dir / "scores" / f"{kind}_{mode}.jsonl",
                benchmark=benchmark,
                cache_dir=self.out / "judge_cache",
                progress=False,
            )
            rows[mode] = row
        return rows


# ---------------------------------------------------------------------------------------- serving


def configure_gradio_environment(out: Path) -> None:
    """Keep Gradio's uploads and caches under `out`, with no analytics (read when gradio is imported)."""
    os.environ["GRADIO_TEMP_DIR"] = str(out / "gradio")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def serve(app: EditingApp, host: str = "127.0.0.1", port: int | None = None, block: bool = True):
    """Launch the page; returns (the Gradio Blocks, its local URL). `block=False` returns at once."""
    from app.page import build_ui, launch_kwargs

    blocks = build_ui(app)
    blocks.queue(default_concurrency_limit=1)
    _, url, _ = blocks.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=True,
        **launch_kwargs(app),
    )
    print(f"[app] serving {url}", flush=True)
    if block:
        try:
            blocks.block_thread()
        finally:
            blocks.close()
    return blocks, url


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out = Path(args.out).resolve()
    configure_gradio_environment(args.out)
    print("[app] loading the agents and the editor ...", flush=True)
    app = EditingApp(args)
    serve(app, args.host, args.port, block=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
