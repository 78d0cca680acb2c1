"""The page of the app (`app.editing_app`, Gradio Blocks): layout and event handlers over `EditingApp`.

Handlers only move values between the page and `EditingApp`; every error comes back as words in
the status line and the app keeps serving. Imported only when the app starts (it imports gradio).
"""

from __future__ import annotations

import threading
from typing import Any

import gradio as gr

from app.editing_app import AppItem, EditingApp, RunResult, lines_of
from inference.pipeline import InputError

CSS = """
.pixelated img { image-rendering: pixelated; width: 100% !important; height: 100% !important; object-fit: contain; }
#status { min-height: 3em; }
"""
#: How often a streaming decomposition refreshes the page (seconds).
STREAM_REFRESH_S = 0.25
SCORE_HEADERS = ["mode", "fulfillment (0-4)", "quality (0-3)", "preservation (0-3)", "total (0-10)", "error"]
#: No "share" button (it offers to upload to a hosted service); download and fullscreen stay.
IMAGE_BUTTONS = ["download", "fullscreen"]
REFERENCE_HEADERS = ["mode", "exact match", "PSNR dB", "SSIM", "error"]


def launch_kwargs(app: EditingApp) -> dict[str, Any]:
    """`Blocks.launch` settings: files served only from the app's folder, no SSR node server, no
    run history in the browser, an upload cap."""
    return {
        "allowed_paths": [str(app.out)],
        "max_file_size": int(app.args.max_upload_mb * 1024 * 1024),
        "ssr_mode": False,
        "run_history": False,
        "footer_links": ["api"],
        "show_error": True,
        "quiet": True,
        "css": CSS,
    }


def _error(text: str) -> str:
    return f"**Error:** {text}"


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"


def _lists(result: Any) -> tuple[str, str, str]:
    d = getattr(result, "parsed", None)
    if d is None:
        return "", "", ""
    return "\n".join(d.actions), "\n".join(d.subjects), "\n".join(d.goals)


def _reasoning(result: Any) -> str:
    d = getattr(result, "parsed", None)
    return d.think if d is not None else (result.raw or "")  # unparseable: what the model wrote


def _decomposition_status(result: Any) -> str:
    if result.error:
        return _error(
            f"{result.error}. Type the actions, subjects and goals (one per line) to go on with your own."
        )
    return f"Decomposed in {result.attempts} attempt(s); format {'ok' if result.format_ok else 'not strict'}."


def _plan_text(result: Any) -> str:
    return "\n".join(result.parsed.sub_requests) if getattr(result, "parsed", None) is not None else ""


def _edited_decomposition(state: dict, actions: str, subjects: str, goals: str):
    from inference.protocol import Decomposition

    lists = lines_of(actions), lines_of(subjects), lines_of(goals)
    if not any(lists):
        return None
    previous = getattr(state.get("decomposition"), "parsed", None)
    return Decomposition(*lists, think=previous.think if previous is not None else "")


def _run_status(run: RunResult) -> str:
    lines = [f"**Run `{run.run_dir.name}`** (files in `{run.run_dir}`)"]
    for mode, m in run.modes.items():
        error = m.trace.get("error")
        took = m.trace.get("timings", {}).get("total_s", 0.0)
        lines.append(f"- {mode}: " + (_error(error) if error else f"done in {_seconds(took)}"))
    if run.plan:
        edited = " (edited by hand)" if run.plan_edited else ""
        lines.append(f"\nRan plan{edited}: " + " ".join(f"{i}. {s}" for i, s in enumerate(run.plan, 1)))
    if run.decomposition_edited:
        lines.append("\nThe decomposition was edited by hand (traces name the agent `decomposition+edited`).")
    return "\n".join(lines)


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _reference_rows(run: RunResult) -> list[list[Any]]:
    rows = []
    for mode, m in run.modes.items():
        r = m.reference
        if r is None:
            continue
        exact = r.get("exact")
        rows.append(
            [
                mode,
                "-" if exact is None else ("yes" if exact else "no"),
                _fmt(r.get("psnr")),
                _fmt(r.get("ssim")),
                r.get("error") or "",
            ]
        )
    return rows


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def _image(label: str, elem_id: str, height: int, kind: str = "filepath") -> gr.Image:
    """A read-only PNG view of the page, drawn pixelated (the tiny models' images are small)."""
    return gr.Image(
        label=label,
        type=kind,
        format="png",
        buttons=IMAGE_BUTTONS,
        interactive=False,
        height=height,
        elem_id=elem_id,
        elem_classes=["pixelated"],
    )


def build_ui(app: EditingApp) -> gr.Blocks:
    """The page: input, agents (editable), run, results, judge, downloads."""
    with gr.Blocks(title="ImageEdit-R1: interactive editing", analytics_enabled=False) as blocks:
        state = gr.State({})
        gr.Markdown(
            "# ImageEdit-R1: decompose, sequence, edit\n"
            "Pick an example or upload an image, type a request, then correct the agents' answers "
            "before the editor runs them."
        )
        gr.Markdown(app.notice, elem_id="notice")
        with gr.Row():
            with gr.Column(scale=1):
                example = gr.Dropdown(
                    choices=app.example_choices(), value=None, label="Built-in example", elem_id="example"
                )
                upload = gr.File(
                    label="... or upload an image", file_types=["image"], type="filepath", elem_id="upload"
                )
                with gr.Row():
                    input_image = _image("Input", "input_image", 200, kind="pil")
                    target_image = _image("Target (exact, examples only)", "target_image", 200)
                item_info = gr.Markdown("", elem_id="item_info")
                request = gr.Textbox(label="Edit request", lines=2, elem_id="request")
                decompose_btn = gr.Button("1. Decompose", variant="primary", elem_id="decompose")
            with gr.Column(scale=1):
                think = gr.Textbox(
                    label="Reasoning (streams while the model writes)",
                    lines=3,
                    interactive=False,
                    elem_id="think",
                )
                with gr.Row():
                    actions = gr.Textbox(label="Actions (one per line)", lines=3, elem_id="actions")
                    subjects = gr.Textbox(label="Subjects", lines=3, elem_id="subjects")
                    goals = gr.Textbox(label="Goals", lines=3, elem_id="goals")
                with gr.Accordion("Raw answer", open=False):
                    raw = gr.Textbox(show_label=False, lines=4, interactive=False, elem_id="raw")
                sequence_btn = gr.Button("2. Sequence the lists above", elem_id="sequence")
                plan = gr.Textbox(
                    label="Sub-requests, in order (one per line: add, remove, reorder, reword)",
                    lines=4,
                    elem_id="plan",
                )
                with gr.Row():
                    mode = gr.Radio(["single", "multi"], value="single", label="Editor turns", elem_id="mode")
                    with_original = gr.Checkbox(
                        value=True, label="Also run the raw request (mode original)", elem_id="with_original"
                    )
                run_btn = gr.Button("3. Run the edit", variant="primary", elem_id="run")
        status = gr.Markdown("", elem_id="status")
        with gr.Row():
            edited_image = _image("Edited (the plan)", "edited_image", 260)
            original_image = _image("Original mode (the raw request)", "original_image", 260)
            steps = gr.Gallery(
                label="Multi-turn steps",
                columns=4,
                height=260,
                buttons=["download", "fullscreen"],
                elem_id="steps",
                elem_classes=["pixelated"],
            )
        reference = gr.Dataframe(
            headers=REFERENCE_HEADERS,
            label="Against the exact target",
            interactive=False,
            elem_id="reference",
        )
        with gr.Accordion("4. Judge", open=app.has_judge):
            gr.Markdown(
                f"Judge: `{app.args.judge_model}` ({app.args.judge_backend})"
                if app.has_judge
                else "No judge configured: start the app with `--judge-model` (see `--help`)."
            )
            with gr.Row():
                scorer_kind = gr.Radio(
                    [("paper rubric", "rubric"), ("principle-wise verifier", "verifier")],
                    value="rubric",
                    label="Scorer",
                    elem_id="scorer",
                )
                judge_btn = gr.Button("Judge the last run", elem_id="judge")
            scores = gr.Dataframe(headers=SCORE_HEADERS, label="Scores", interactive=False, elem_id="scores")
            judge_text = gr.Textbox(
                label="The judge's reasoning", lines=4, interactive=False, elem_id="judge_text"
            )
        downloads = gr.File(
            label="Downloads (images, traces, scores)", file_count="multiple", elem_id="downloads"
        )
        command = gr.Textbox(
            label="The same run in batch (python -m inference ...; exact while the plan is unedited)",
            interactive=False,
            elem_id="command",
            buttons=["copy"],
        )

        agent_boxes = [think, actions, subjects, goals, raw, plan]

        # -------------------------------------------------------------- input
        def clear_agents() -> list[Any]:
            return ["", "", "", "", "", ""]

        def on_example(example_id: str | None, st: dict):
            if not example_id:
                return [gr.skip()] * 6 + [gr.skip()] * 6
            try:
                item = app.example_item(example_id)
                image = app.load_image(item.image)
            except Exception as exc:  # noqa: BLE001
                return [st, gr.skip(), gr.skip(), gr.skip(), gr.skip(), _error(_describe(exc))] + [
                    gr.skip()
                ] * 6
            info = f"Item `{item.id}` ({item.source}; seeds derive from the id and `--seed {app.args.seed}`)"
            target = str(item.reference) if item.reference else None
            return [{"item": item}, image, target, item.request, info, ""] + clear_agents()

        example.change(
            on_example,
            [example, state],
            [state, input_image, target_image, request, item_info, status, *agent_boxes],
            api_name="select_example",
        )

        def on_upload(path: str | None, st: dict):
            if not path:
                return [gr.skip()] * 5 + [gr.skip()] * 6
            try:
                item = app.upload_item(path)
                image = app.load_image(item.image)
            except Exception as exc:  # noqa: BLE001 - refused uploads are reported, not raised
                return [{}, None, None, "", _error(f"upload refused: {_describe(exc)}")] + clear_agents()
            info = f"Item `{item.id}` (upload; seeds derive from the id and `--seed {app.args.seed}`)"
            return [{"item": item}, image, None, info, ""] + clear_agents()

        upload.upload(
            on_upload,
            [upload, state],
            [state, input_image, target_image, item_info, status, *agent_boxes],
            api_name="upload",
        )

        # -------------------------------------------------------------- agents
        def _item(st: dict, text: str) -> AppItem:
            item = st.get("item")
            if item is None:
                raise InputError("pick an example or upload an image first")
            if not (text or "").strip():
                raise InputError("type an edit request first")
            return item.with_request(text)

        def _sequence_into(st: dict, item: AppItem, decomposition: Any) -> tuple[str, str]:
            result = app.sequence(item, decomposition)
            st.update(sequencing=result, sequenced_from=decomposition)
            message = (
                _error(result.error)
                if result.error
                else f"Sequenced into {len(result.parsed.sub_requests)} sub-request(s)."
            )
            return _plan_text(result), message

        def on_decompose(st: dict, text: str):
            try:
                item = _item(st, text)
            except InputError as exc:
                yield [st, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), _error(str(exc))]
                return
            chunks: list[str] = []
            done = threading.Event()
            box: dict[str, Any] = {}

            def work() -> None:
                try:
                    box["result"] = app.decompose(item, on_text=chunks.append)
                finally:
                    done.set()

            threading.Thread(target=work, name="decompose", daemon=True).start()
            while not done.wait(STREAM_REFRESH_S):
                yield [
                    gr.skip(),
                    "".join(chunks),
                    gr.skip(),
                    gr.skip(),
                    gr.skip(),
                    gr.skip(),
                    gr.skip(),
                    "Decomposing ...",
                ]
            result = box["result"]
            st = {"item": item, "decomposition": result, "decomposed_for": (item.id, item.request)}
            message = _decomposition_status(result)
            plan_text = ""
            if result.parsed is not None:
                plan_text, seq_message = _sequence_into(st, item, result.parsed)
                message += " " + seq_message
            yield [st, _reasoning(result), *_lists(result), result.raw or "", plan_text, message]

        decompose_btn.click(
            on_decompose,
            [state, request],
            [state, think, actions, subjects, goals, raw, plan, status],
            api_name="decompose",
        )

        def on_sequence(st: dict, text: str, a: str, s: str, g: str):
            try:
                item = _item(st, text)
                decomposition = _edited_decomposition(st, a, s, g)
                if decomposition is None:
                    raise InputError(
                        "the lists are empty: decompose first, or type actions, subjects and goals"
                    )
                plan_text, message = _sequence_into(st, item, decomposition)
                return st, plan_text, message
            except Exception as exc:  # noqa: BLE001
                return st, gr.skip(), _error(_describe(exc))

        sequence_btn.click(
            on_sequence,
            [state, request, actions, subjects, goals],
            [state, plan, status],
            api_name="sequence",
        )

        # -------------------------------------------------------------- run
        def on_run(
            st: dict,
            text: str,
            a: str,
            s: str,
            g: str,
            plan_box: str,
            turns: str,
            original: bool,
            progress=gr.Progress(),
        ):
            keep = [gr.skip()] * 6
            try:
                item = _item(st, text)
                if turns not in ("single", "multi"):
                    raise InputError(f"editor turns must be single or multi, got {turns!r}")
                progress(0.0, desc="agents")
                if st.get("decomposed_for") != (item.id, item.request):  # new item or request
                    result = app.decompose(item)
                    st = {"item": item, "decomposition": result, "decomposed_for": (item.id, item.request)}
                    a, s, g = _lists(result)
                    plan_box = ""
                    keep[:5] = [_reasoning(result), a, s, g, result.raw or ""]
                decomposition = st["decomposition"]
                edited = _edited_decomposition(st, a, s, g)
                chosen = edited if edited is not None else decomposition.parsed
                agent_plan = _plan_text(st.get("sequencing"))
                hand_plan = (
                    lines_of(plan_box)
                    if lines_of(plan_box) and plan_box.strip() != agent_plan.strip()
                    else None
                )
                if chosen is not None and hand_plan is None and st.get("sequenced_from") != chosen:
                    plan_box, _ = _sequence_into(st, item, chosen)  # the lists changed: order them again
                    keep[5] = plan_box
                modes = [turns] + (["original"] if original else [])

                def on_mode(index: int, mode: str) -> None:
                    progress(index / len(modes), desc=f"editing: {mode}")

                run = app.run(
                    item,
                    modes,
                    decomposition=decomposition,
                    edited_decomposition=edited,
                    sequencing=st.get("sequencing"),
                    edited_plan=lines_of(plan_box) or None,
                    on_mode=on_mode,
                )
            except Exception as exc:  # noqa: BLE001 - the page shows it, the app goes on
                return [
                    st,
                    *keep,
                    gr.skip(),
                    gr.skip(),
                    gr.skip(),
                    _error(_describe(exc)),
                    gr.skip(),
                    gr.skip(),
                    gr.skip(),
                ]
            st = {**st, "run": run, "turns": turns}
            main = run.modes[turns]
            orig = run.modes.get("original")
            steps_value = [(str(p), caption) for p, caption in main.steps]
            return [
                st,
                *keep,
                str(main.output) if main.output else None,
                str(orig.output) if orig and orig.output else None,
                steps_value,
                _run_status(run),
                _reference_rows(run),
                [str(p) for p in run.files(turns)],
                "python -m inference " + " ".join(_quote(x) for x in run.command),
            ]

        run_btn.click(
            on_run,
            [state, request, actions, subjects, goals, plan, mode, with_original],
            [state, *agent_boxes, edited_image, original_image, steps, status, reference, downloads, command],
            api_name="run",
        )

        # -------------------------------------------------------------- judge
        def on_judge(st: dict, kind: str):
            try:
                run = st.get("run")
                if run is None:
                    raise InputError("run an edit first")
                item = st["item"]
                rows = app.judge(run, kind, benchmark=item.source)
            except Exception as exc:  # noqa: BLE001
                return gr.skip(), gr.skip(), gr.skip(), _error(f"judge: {_describe(exc)}")
            table, texts = [], []
            for mode, row in rows.items():
                table.append(
                    [mode]
                    + [_fmt(row.get(k)) for k in ("fulfillment", "quality", "preservation", "total")]
                    + [row.get("error") or ""]
                )
                if row.get("reasoning"):
                    texts.append(f"[{mode}] {row['reasoning']}")
                for v in row.get("verdicts") or []:
                    texts.append(f"[{mode}] {v['verdict']}: {v['principle']} - {v.get('reasoning', '')}")
            files = [str(p) for p in run.files(st["turns"])]
            failed = [m for m, r in rows.items() if r.get("error")]
            message = f"Judged {len(rows)} mode(s) with the {kind}" + (
                f"; failed: {', '.join(failed)}" if failed else "."
            )
            return table, "\n".join(texts), files, message

        judge_btn.click(
            on_judge, [state, scorer_kind], [scores, judge_text, downloads, status], api_name="judge"
        )
    return blocks


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
