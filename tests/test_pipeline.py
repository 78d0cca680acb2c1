"""Pipeline mechanics without neural models: input checks, traces, resume, duplicates, CLI, and the
tool editor on synthetic scenes (exact outputs)."""

from __future__ import annotations

import dataclasses
import json
import struct
import urllib.parse
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from inference.agents import TemplateSequencer
from inference.cli import cli
from inference.cli import main as cli_main
from inference.editors import make_editor
from inference.fileio import save_png
from inference.pipeline import (
    EditingPipeline,
    InputError,
    OracleDecomposer,
    OracleSequencer,
    done_ids,
    file_stem,
    item_seed,
    load_image,
    read_traces,
)
from inference.records import IMAGES_DIR, Record, read_records, write_records
from inference.scenes import scene_of
from inference.synthetic_items import write_synthetic_eval_set

TRACE_KEYS = {
    "id",
    "mode",
    "instruction",
    "input_image",
    "output_image",
    "decomposition",
    "plan",
    "editor",
    "models",
    "seed",
    "timings",
    "error",
}


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    return write_synthetic_eval_set(tmp_path_factory.mktemp("eval"), 8, seed=0, max_edits=3)


def _tool_pipeline(**kw):
    return EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer(), **kw)


# ------------------------------------------------------------------------------ input images


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A PNG header declaring a huge image (no pixel data): must be refused before decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_load_image_refuses_bad_files_naming_them(tmp_path):
    with pytest.raises(InputError, match="missing_file: no such image file .*missing.png"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="corrupt_image: .*text.png"):
        load_image(tmp_path / "text.png")
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), "red").save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(InputError, match="corrupt_image: .*cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(InputError, match="decompression_bomb: .*bomb.png"):
        load_image(_bomb_png(tmp_path / "bomb.png", 100_000, 100_000))
    with pytest.raises(InputError, match=r"decompression_bomb: .*64x64 exceeds 1000 pixels"):
        load_image(good, max_pixels=1000)
    Image.new("RGB", (4, 64)).save(tmp_path / "thin.png")
    with pytest.raises(InputError, match="image_too_small: .*4x64"):
        load_image(tmp_path / "thin.png")


def test_load_image_converts_odd_modes_to_rgb(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    Image.new("P", (32, 32), 3).save(tmp_path / "p.png")
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "cmyk.jpg").mode == "RGB"
    deep = Image.fromarray(np.array([[0, 65535] * 16] * 32, dtype=np.uint16))
    deep.save(tmp_path / "deep.png")
    out = load_image(tmp_path / "deep.png")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((1, 0)) == (255, 255, 255)
    assert load_image(tmp_path / "p.png").mode == "RGB"


def test_load_image_keeps_the_synthetic_scene(eval_set):
    record = next(read_records(eval_set))
    image = load_image(record.image)
    assert scene_of(image) is not None and image.mode == "RGB"


# ------------------------------------------------------------------------------ ids and seeds


def test_item_seed_and_file_stem():
    assert item_seed(0, "a") == item_seed(0, "a") != item_seed(1, "a")
    assert 0 <= item_seed(5, "x") < 2**31
    assert file_stem("synthetic-0-0000001") == "synthetic-0-0000001"
    assert file_stem("psr/12 a") == "psr%2F12%20a" != file_stem("psr_12 a")
    for bad in ("", " ", ".", ".."):
        with pytest.raises(InputError, match="item id"):
            file_stem(bad)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=120))
def test_file_stem_is_a_safe_injective_file_name(item_id):
    if not item_id.strip() or item_id in (".", ".."):
        with pytest.raises(InputError):
            file_stem(item_id)
        return
    try:
        stem = file_stem(item_id)
    except InputError as exc:
        assert "too long" in str(exc)
        return
    assert stem and not stem.startswith(".") and len(stem) <= 200
    assert not set(stem) & {"/", "\\", "\x00", ":", " ", "\n"}
    assert urllib.parse.unquote(stem) == item_id  # distinct ids never share a file


# ------------------------------------------------------------------------------ the tool editor end to end


def test_agents_answer_once_per_item_across_modes(eval_set, tmp_path):
    class CountingDecomposer(OracleDecomposer):
        calls: list[str] = []

        def decompose_items(self, items):
            self.calls += [it.id for it in items]
            return super().decompose_items(items)

    decomposer = CountingDecomposer()
    pipe = EditingPipeline(make_editor("tool"), decomposer, OracleSequencer(), batch_size=3)
    items = list(read_records(eval_set))
    for mode in ("single", "multi"):
        assert pipe.run(items, tmp_path, mode, progress=False).failed == 0
    assert sorted(decomposer.calls) == sorted(it.id for it in items)  # asked once, reused by multi
    single = {t["id"]: t["decomposition"] for t in read_traces(tmp_path / "single")}
    assert all(t["decomposition"] == single[t["id"]] for t in read_traces(tmp_path / "multi"))
    # the time is spent once: the second mode records none for the reused stages, and says so
    assert all("reused" not in t for t in read_traces(tmp_path / "single"))
    for t in read_traces(tmp_path / "multi"):
        assert t["reused"] == ["decompose", "sequence"]
        assert t["timings"]["decompose_s"] == 0.0 and t["timings"]["sequence_s"] == 0.0


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_ground_truth_agents_with_the_tool_editor_reproduce_the_targets(eval_set, tmp_path, mode):
    summary = _tool_pipeline(batch_size=3).run(read_records(eval_set), tmp_path, mode, progress=False)
    assert (summary.done, summary.failed) == (8, 0)
    records = {r.id: r for r in read_records(eval_set)}
    traces = list(read_traces(tmp_path / mode))
    assert sorted(t["id"] for t in traces) == sorted(records)
    for t in traces:
        assert TRACE_KEYS <= set(t) and t["error"] is None and t["mode"] == mode
        out = Image.open(t["output_image"])
        target = Image.open(records[t["id"]].references[0])
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(target.convert("RGB")))
        assert scene_of(out) == scene_of(target)  # the scene survived as a PNG text chunk
        assert t["plan"] == list(records[t["id"]].plan.sub_requests)
        assert t["decomposition"]["parsed"]["actions"] == list(records[t["id"]].decomposition.actions)


def test_original_mode_sends_the_request_as_is(eval_set, tmp_path):
    pipe = EditingPipeline(make_editor("tool"))  # no agents needed
    pipe.run(read_records(eval_set), tmp_path, "original", progress=False)
    traces = list(read_traces(tmp_path / "original"))
    assert len(traces) == 8
    for t in traces:
        assert t["decomposition"] is None and t["plan"] is None
        if t["error"]:  # natural phrasings are not canonical: the tool editor refuses, naming the text
            assert (
                t["error"].startswith("editor tool: ValueError: cannot execute") and t["output_image"] is None
            )


def test_template_sequencer_runs_too(eval_set, tmp_path):
    pipe = EditingPipeline(make_editor("tool"), OracleDecomposer(), TemplateSequencer())
    summary = pipe.run(read_records(eval_set), tmp_path, "single", progress=False)
    assert summary.done == 8
    assert all(t["models"]["sequencing"] == "template" for t in read_traces(tmp_path / "single"))


# ------------------------------------------------------------------------------ bad input in a batch


def test_bad_items_get_clear_errors_and_the_batch_goes_on(eval_set, tmp_path):
    folder = tmp_path / "data"
    good = list(read_records(eval_set))[:2]
    (folder / IMAGES_DIR).mkdir(parents=True)
    (folder / IMAGES_DIR / "junk.png").write_bytes(b"GIF89a nonsense")
    Image.new("RGB", (64, 64)).save(folder / IMAGES_DIR / "plain.png")
    _bomb_png(folder / IMAGES_DIR / "bomb.png", 90_000, 90_000)
    recs = [
        Record(
            g.id,
            g.source,
            g.instruction,
            save_png(load_image(g.image), folder / IMAGES_DIR / g.image.name),
            decomposition=g.decomposition,
            plan=g.plan,
        )
        for g in good
    ]
    bad = [
        Record("missing", "t", "Brighten the image", folder / IMAGES_DIR / "nope.png"),
        Record("junk", "t", "Brighten the image", folder / IMAGES_DIR / "junk.png"),
        Record("bomb", "t", "Brighten the image", folder / IMAGES_DIR / "bomb.png"),
        Record("empty", "t", "   ", folder / IMAGES_DIR / "plain.png"),
        Record("no-scene", "t", "Brighten the image", folder / IMAGES_DIR / "plain.png"),
    ]
    write_records(folder, [recs[0], *bad, recs[1]])
    for mode in ("original", "single"):
        pipe = _tool_pipeline(batch_size=4) if mode == "single" else EditingPipeline(make_editor("tool"))
        summary = pipe.run(read_records(folder), tmp_path / "out", mode, progress=False)
        assert summary.done == 7
        errors = {t["id"]: t["error"] for t in read_traces(tmp_path / "out" / mode)}
        assert errors["missing"].startswith("missing_file:") and "nope.png" in errors["missing"]
        assert errors["junk"].startswith("corrupt_image:")
        assert errors["bomb"].startswith("decompression_bomb:")
        assert errors["empty"] == "empty edit request for item 'empty'"
        if mode == "original":
            assert "carries no synthetic scene" in errors["no-scene"]
        else:
            assert "has no ground-truth decomposition" in errors["no-scene"]
            assert errors[recs[0].id] is None and errors[recs[1].id] is None
    assert not (tmp_path / "out" / "original" / "missing.png").exists()


# ------------------------------------------------------------------------------ resume, duplicates


def test_resume_skips_done_items_and_retry_errors_redoes_failures(eval_set, tmp_path):
    items = list(read_records(eval_set))
    pipe = _tool_pipeline(batch_size=2)
    first = pipe.run(items[:5], tmp_path, "single", progress=False)
    assert (first.done, first.skipped) == (5, 0)
    before = {p.name: p.read_bytes() for p in (tmp_path / "single").glob("*.json")}
    (tmp_path / "single" / ".x.json.abc.tmp").write_text("half")  # a killed write
    second = pipe.run(items + items[:2], tmp_path, "single", progress=False)
    assert (second.done, second.skipped, second.duplicates) == (3, 5, 2)
    assert all((tmp_path / "single" / n).read_bytes() == b for n, b in before.items())  # not redone
    assert not list((tmp_path / "single").glob(".*.tmp"))
    assert len(done_ids(tmp_path / "single")) == 8

    # an item that failed is kept as done, unless asked to retry errors
    broken = Record("broken", "test", "Remove the red circle", items[0].image)  # no ground truth -> error
    pipe.run([broken], tmp_path, "single", progress=False)
    assert pipe.run([broken], tmp_path, "single", progress=False).skipped == 1
    again = pipe.run([broken], tmp_path, "single", retry_errors=True, progress=False)
    assert again.done == 1 and again.failed == 1


def test_same_input_and_seed_give_the_same_traces(eval_set, tmp_path):
    runs = []
    for name in ("a", "b"):
        _tool_pipeline(seed=3).run(read_records(eval_set), tmp_path / name, "multi", progress=False)
        runs.append(
            {
                t["id"]: {k: v for k, v in t.items() if k not in ("timings", "output_image")}
                for t in read_traces(tmp_path / name / "multi")
            }
        )
    assert runs[0] == runs[1]
    for png in (tmp_path / "a" / "multi").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "b" / "multi" / png.name).read_bytes()


# ------------------------------------------------------------------------------ CLI


def test_cli_one_image(tmp_path, eval_set, capsys):
    record = next(r for r in read_records(eval_set) if len(r.plan.sub_requests) >= 1)
    request = " and ".join(s.lower() for s in record.plan.sub_requests)
    code = cli_main(
        [
            "--image",
            str(record.image),
            "--request",
            record.plan.sub_requests[0],
            "--out",
            str(tmp_path),
            "--mode",
            "original",
            "--editor",
            "tool",
            "--id",
            "one",
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["done"] == 1 and summary["failed"] == 0
    (trace,) = read_traces(tmp_path / "original")
    assert trace["id"] == "one" and Path(trace["output_image"]).is_file()
    code = cli_main(
        [
            "--image",
            str(record.image),
            "--request",
            request + " and paint a moustache",
            "--out",
            str(tmp_path / "bad"),
            "--mode",
            "original",
            "--editor",
            "tool",
            "--no-progress",
        ]
    )
    assert code == 1 and "cannot execute" in capsys.readouterr().err


def test_cli_records_several_modes_with_resume(tmp_path, eval_set, capsys):
    args = [
        "--records",
        str(eval_set),
        "--out",
        str(tmp_path),
        "--editor",
        "tool",
        "--decomposer",
        "ground_truth",
        "--sequencer",
        "ground_truth",
        "--mode",
        "single",
        "--mode",
        "multi",
        "--no-progress",
        "--limit",
        "5",
    ]
    assert cli_main(args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [(x["mode"], x["done"], x["failed"]) for x in lines] == [("single", 5, 0), ("multi", 5, 0)]
    assert cli_main(args[:-2]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [(x["done"], x["skipped"]) for x in lines] == [(3, 5), (3, 5)]


def test_cli_exits_non_zero_when_a_mode_loses_too_much_and_errors_are_one_line(tmp_path, eval_set, capsys):
    # the oracle decomposer needs ground truth: records without it lose every item in mode single
    import shutil

    bare = shutil.copytree(eval_set, tmp_path / "bare")
    write_records(bare, [dataclasses.replace(r, decomposition=None) for r in read_records(bare)][:4])
    args = ["--records", str(bare), "--editor", "tool", "--decomposer", "ground_truth", "--no-progress"]
    assert cli_main([*args, "--out", str(tmp_path / "a"), "--sequencer", "ground_truth"]) == 1
    err = capsys.readouterr().err
    assert "inference single: FAILED: kept nothing: kept 0 of 4; top reasons: ground_truth=4" in err
    assert cli_main([*args, "--out", str(tmp_path / "b"), "--sequencer", "template", "--max-loss", "1"]) == 1
    assert (
        cli(["--records", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c"), "--editor", "tool"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m inference: error: FileNotFoundError: no records.jsonl in")
    assert not any("Traceback" in line for line in err)


def test_hosted_editor_calls_run_concurrently_within_a_batch(eval_set, tmp_path):
    import base64
    import io
    import threading

    from local_server import LocalServer

    overlapped = threading.Event()  # set once two editor calls are in flight at the same time

    def respond(req):
        if server.active >= 2:
            overlapped.set()
        overlapped.wait(timeout=30)  # hold each call until the pipeline has made a second one
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (9, 9, 9)).save(buf, format="PNG")
        part = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(buf.getvalue()).decode()}}
        return 200, {}, {"candidates": [{"content": {"parts": [part]}}]}

    with LocalServer(respond) as server:
        editor = make_editor("gemini", base_url=server.url, api_key_env=None)
        pipe = EditingPipeline(editor, batch_size=8, edit_workers=4)
        summary = pipe.run(read_records(eval_set), tmp_path, "original", progress=False)
    assert (summary.done, summary.failed) == (8, 0)
    assert 2 <= server.max_active <= 4
    for t in read_traces(tmp_path / "original"):
        assert Image.open(t["output_image"]).size == (64, 64)  # resized back to the input size


def test_an_unnamable_id_is_reported_and_the_run_goes_on(eval_set, tmp_path):
    items = list(read_records(eval_set))[:2]
    summary = _tool_pipeline().run(
        [Record("..", "test", "x", items[0].image), *items], tmp_path, "single", progress=False
    )
    assert (summary.invalid, summary.done, summary.failed) == (1, 2, 0)


def test_agents_over_an_openai_compatible_server_drive_the_tool_editor_exactly(eval_set, tmp_path):
    """The whole chain with the HTTP backend: a local chat-completions server answers like a trained
    model (the ground truth of the request it is shown); the tool editor must hit every target."""
    from local_server import LocalServer

    from inference.agents import DecompositionAgent, VLMSequencer
    from inference.chat_backends import make_backend
    from inference.protocol import render_decomposition, render_plan

    records = list(read_records(eval_set))

    def respond(req):
        text = json.loads(req["body"])["messages"][0]["content"][-1]["text"]
        record = next(r for r in records if f'"{r.instruction}"' in text)
        sequencing = text.startswith("You are the sequencing agent")
        answer = render_plan(record.plan) if sequencing else render_decomposition(record.decomposition)
        return 200, {}, {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}

    with LocalServer(respond) as server:
        backend = make_backend(
            "openai", "served", base_url=server.url + "/v1", api_key_env=None, max_concurrency=4
        )
        pipe = EditingPipeline(
            make_editor("tool"), DecompositionAgent(backend), VLMSequencer(backend), batch_size=4
        )
        summary = pipe.run(read_records(eval_set), tmp_path, "multi", progress=False)
    assert (summary.done, summary.failed) == (8, 0)
    assert len(server.requests) == 16  # one decomposition and one sequencing call per item
    by_id = {r.id: r for r in records}
    for t in read_traces(tmp_path / "multi"):
        assert t["decomposition"]["format_ok"] and t["models"]["decomposition_backend"] == "OpenAIBackend"
        target = Image.open(by_id[t["id"]].references[0]).convert("RGB")
        assert np.array_equal(np.asarray(Image.open(t["output_image"]).convert("RGB")), np.asarray(target))


def test_multi_mode_errors_name_the_failing_step_and_empty_plans_are_errors(eval_set, tmp_path):
    from inference.protocol import Decomposition, EditPlan

    record = next(read_records(eval_set))
    gt = Decomposition(("brighten",), ("image",), ("brighter",))
    items = [
        Record(
            "bad-step",
            "test",
            "x",
            record.image,
            (),
            gt,
            EditPlan(("Brighten the image", "Paint a moustache")),
        ),
        Record("no-steps", "test", "x", record.image, (), gt, EditPlan(())),
    ]
    _tool_pipeline().run(items, tmp_path, "multi", progress=False)
    errors = {t["id"]: t["error"] for t in read_traces(tmp_path / "multi")}
    assert errors["bad-step"].startswith(
        "editor tool: step 2/2 'Paint a moustache': ValueError: cannot execute"
    )
    assert errors["no-steps"] == "sequence: the plan has no sub-requests"
