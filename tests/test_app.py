"""The editing app through its HTTP API (gradio_client) against the app served on 127.0.0.1 in the
test: pick an example, decompose (streamed), edit the lists and the plan, run single and multi
(traces equal to the batch CLI's for the same inputs and seed), judge with a fake OpenAI-compatible
judge on 127.0.0.1, and errors shown in words while the app keeps running."""

from __future__ import annotations

import json
import os
import shlex
import struct
import subprocess
import sys
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from app_helpers import FakeJudgeServer, running_app
from local_server import request_json
from PIL import Image

from inference.pipeline import file_stem
from inference.protocol import render_decomposition
from inference.synthetic_items import write_synthetic_eval_set
from inference.teaching import taught_on_first_item

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    # The same set as test_pipeline_models: the taught tiny VLM comes from the shared cache.
    return write_synthetic_eval_set(tmp_path_factory.mktemp("eval"), 3, seed=0, max_edits=2)


@pytest.fixture(scope="module")
def taught(eval_set, tiny_vlm_dir):
    return taught_on_first_item(eval_set, tiny_vlm_dir)


@pytest.fixture(scope="module")
def judge_server():
    with FakeJudgeServer() as server:
        yield server


@pytest.fixture(scope="module")
def served(taught, eval_set, judge_server, tmp_path_factory):
    _, model = taught
    out = tmp_path_factory.mktemp("app")
    argv = [
        "--out", str(out), "--examples", str(eval_set), "--llm-model", str(model),
        "--max-new-tokens", "96", "--max-attempts", "2", "--seed", "3",
        "--judge-backend", "openai", "--judge-model", "fake-judge",
        "--judge-base-url", judge_server.url, "--judge-api-key-env", "",
    ]  # fmt: skip
    with running_app(argv) as (app, url):
        yield app, url


@pytest.fixture
def client(served, tmp_path):
    from gradio_client import Client

    return Client(
        served[1], download_files=str(tmp_path / "downloads"), verbose=False, analytics_enabled=False
    )


def _select(client, item_id):
    return client.predict(item_id, api_name="/select_example")


def _run(client, request, lists, plan, turns, original):
    """`/run`; returns a dict of the outputs by name."""
    out = client.predict(request, *lists, plan, turns, original, api_name="/run")
    names = ["think", "actions", "subjects", "goals", "raw", "plan", "edited", "original", "steps"]
    names += ["status", "reference", "downloads", "command"]
    return dict(zip(names, out, strict=True))


def _traces(run_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(run_dir.glob("*/*.json"))}


def _run_dir(app, status: str) -> Path:
    name = status.split("**Run `", 1)[1].split("`", 1)[0]
    return app.out / "runs" / name


def _same_as_cli(app_trace: dict, cli_trace: dict) -> None:
    """Equal but for the times and where the output was written; the outputs are the same bytes."""
    a, b = dict(app_trace), dict(cli_trace)
    a.pop("timings"), b.pop("timings")
    out_a, out_b = a.pop("output_image"), b.pop("output_image")
    assert a == b
    assert (out_a is None) == (out_b is None)
    if out_a:
        assert Path(out_a).read_bytes() == Path(out_b).read_bytes()


def test_decompose_streams_the_answer_then_sequences_it(served, client, taught):
    app, _ = served
    first, _ = taught
    picked = _select(client, first.id)
    assert picked[2] == first.instruction and first.id in picked[3]
    think, actions, subjects, goals, raw, plan, status = client.predict(
        first.instruction, api_name="/decompose"
    )
    assert raw == render_decomposition(first.decomposition)
    assert think == first.decomposition.think
    assert actions.splitlines() == list(first.decomposition.actions)
    assert subjects.splitlines() == list(first.decomposition.subjects)
    assert goals.splitlines() == list(first.decomposition.goals)
    assert plan.splitlines() == list(first.plan.sub_requests) and "Error" not in status
    # The same agent call outside the page streams exactly the text it returns.
    chunks = []
    result = app.decompose(app.example_item(first.id), on_text=chunks.append)
    assert "".join(chunks).strip() == result.raw == raw and len(chunks) > 1


def test_unedited_runs_write_the_batch_clis_traces(served, client, taught, tmp_path):
    from inference.cli import main as cli_main

    app, _ = served
    first, _ = taught
    _select(client, first.id)
    client.predict(first.instruction, api_name="/decompose")
    lists = ["\n".join(getattr(first.decomposition, k)) for k in ("actions", "subjects", "goals")]
    plan = "\n".join(first.plan.sub_requests)
    for turns, original in (("single", True), ("multi", False)):
        out = _run(client, first.instruction, lists, plan, turns, original)
        assert "edited by hand" not in out["status"], out["status"]
        run_dir = _run_dir(app, out["status"])
        traces = _traces(run_dir)
        assert set(traces) == ({turns, "original"} if original else {turns})
        assert traces[turns]["error"] is None and traces[turns]["plan"] == list(first.plan.sub_requests)
        # The tool editor on the right plan gives the exact target, and the page says so.
        assert out["reference"]["data"][0][:2] == [turns, "yes"]
        # The downloaded trace is the one on disk.
        downloaded = [Path(p) for p in out["downloads"] if p.endswith(".json")]
        assert json.loads(downloaded[0].read_text()) == traces[turns]
        (archive,) = [p for p in out["downloads"] if p.endswith(".zip")]
        names = zipfile.ZipFile(archive).namelist()
        assert {f"{mode}/{file_stem(first.id)}.json" for mode in traces} <= set(names)
        # The command the page shows, run by the batch CLI, writes the same traces.
        argv = shlex.split(out["command"])[3:]
        argv[argv.index("--out") + 1] = str(tmp_path / turns)
        assert cli_main(argv + ["--no-progress"]) in (0, 1)
        for mode, trace in traces.items():
            cli_trace = json.loads((tmp_path / turns / mode / f"{file_stem(first.id)}.json").read_text())
            _same_as_cli(trace, cli_trace)
    assert traces["multi"]["seed"] != 0 and traces["multi"]["run_seed"] == 3


def test_edited_plan_runs_in_the_given_order_and_the_trace_says_so(served, client, taught):
    from inference.editors import make_editor

    app, _ = served
    first, _ = taught
    _select(client, first.id)
    client.predict(first.instruction, api_name="/decompose")
    lists = ["\n".join(getattr(first.decomposition, k)) for k in ("actions", "subjects", "goals")]
    # add a step, reword one, reorder: blur first, then darken instead of brighten
    plan = "Blur the background\nDarken the image"
    out = _run(client, first.instruction, lists, plan, "multi", False)
    assert "Ran plan (edited by hand): 1. Blur the background 2. Darken the image" in out["status"]
    assert [s["caption"] for s in out["steps"]] == ["step 1: Blur the background", "step 2: Darken the image"]
    (trace,) = _traces(_run_dir(app, out["status"])).values()
    assert trace["plan"] == ["Blur the background", "Darken the image"] and trace["error"] is None
    assert trace["models"]["sequencing_agent"] == "template+edited"
    assert trace["models"]["decomposition_agent"] == "decomposition"
    tool = make_editor("tool")
    image = app.load_image(first.image)
    expected = tool.edit(tool.edit(image, "Blur the background"), "Darken the image")
    assert np.array_equal(np.asarray(Image.open(out["edited"]).convert("RGB")), np.asarray(expected))
    assert out["reference"]["data"][0][1] == "no"  # not what the request asked for


def test_edited_lists_are_sequenced_again_before_the_run(served, client, taught):
    app, _ = served
    first, _ = taught
    _select(client, first.id)
    _, _, _, _, _, plan, _ = client.predict(first.instruction, api_name="/decompose")
    out = _run(client, first.instruction, ["darken", "image", "darker"], plan, "single", False)
    assert out["plan"] == "Darken the image"
    (trace,) = _traces(_run_dir(app, out["status"])).values()
    assert trace["models"]["decomposition_agent"] == "decomposition+edited"
    assert trace["models"]["sequencing_agent"] == "template"  # the agent's own plan of the edited lists
    assert trace["decomposition"]["parsed"]["actions"] == ["darken"]
    assert trace["decomposition"]["raw"] == render_decomposition(first.decomposition)
    assert trace["plan"] == ["Darken the image"]


def test_judge_and_verifier_score_the_run_through_a_local_openai_server(served, client, taught, judge_server):
    from eval.scores import read_scores

    app, _ = served
    first, _ = taught
    _select(client, first.id)
    client.predict(first.instruction, api_name="/decompose")
    lists = ["\n".join(getattr(first.decomposition, k)) for k in ("actions", "subjects", "goals")]
    out = _run(client, first.instruction, lists, "\n".join(first.plan.sub_requests), "single", True)
    run_dir = _run_dir(app, out["status"])
    before = len(judge_server.requests)
    table, text, files, status = client.predict("rubric", api_name="/judge")
    assert "Judged 2 mode(s)" in status
    rows = {r[0]: r for r in table["data"]}
    assert rows["single"][1:5] == ["4", "3", "2", "9"]
    assert rows["original"][5].startswith("no edited image")  # the tool cannot run the raw request
    assert "[single] the edit is done" in text
    (asked,) = [request_json(r) for r in judge_server.requests[before:]]
    assert asked["model"] == "fake-judge"
    assert [p["type"] for p in asked["messages"][0]["content"]] == ["image_url", "image_url", "text"]
    (score,) = read_scores(run_dir / "scores" / "rubric_single.jsonl")
    assert score["total"] == 9 and score["benchmark"] == "synthetic" and score["method"] == "single"
    (archive,) = [f for f in files if f.endswith(".zip")]
    assert "scores/rubric_single.jsonl" in zipfile.ZipFile(archive).namelist()
    table, text, _, status = client.predict("verifier", api_name="/judge")
    assert "Judged 2 mode(s) with the verifier" in status
    assert {r[0]: r[4] for r in table["data"]}["single"] == "10"
    assert f"yes: {first.plan.sub_requests[0]}" in text


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file that claims to be `width` x `height` (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_uploads_are_checked_and_errors_are_shown_in_words(served, client, taught, tmp_path):
    from gradio_client import handle_file

    app, _ = served
    first, _ = taught
    fresh = _run(client, first.instruction, ["", "", ""], "", "single", False)  # nothing picked yet
    assert "pick an example or upload an image first" in fresh["status"]
    bomb = _png_header_only(tmp_path / "bomb.png", 50_000, 50_000)
    refused = client.predict(handle_file(str(bomb)), api_name="/upload")
    assert "upload refused: decompression_bomb" in refused[3]
    Image.new("RGB", (12, 12), "white").save(tmp_path / "speck.png")
    speck = client.predict(handle_file(str(tmp_path / "speck.png")), api_name="/upload")
    assert "upload refused: image_too_small" in speck[3]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert "upload refused: corrupt_image" in client.predict(handle_file(str(text)), api_name="/upload")[3]
    # a real upload: kept under the app's folder, decomposed and edited like the example it copies
    picked = client.predict(handle_file(str(first.image)), api_name="/upload")
    assert first.id in picked[2] and "Error" not in picked[3]
    out = _run(client, first.instruction, ["", "", ""], "", "single", False)
    (trace,) = _traces(_run_dir(app, out["status"])).values()
    assert trace["error"] is None and Path(trace["input_image"]).is_relative_to(app.out)
    assert out["reference"]["data"] == []  # uploads have no reference
    # an editor failure is a message, and the next run works
    bad = _run(client, first.instruction, ["", "", ""], "Paint a moustache on it", "multi", False)
    assert "editor tool:" in bad["status"] and "step 1/1 'Paint a moustache on it'" in bad["status"]
    assert "done in" in _run(client, first.instruction, ["", "", ""], "", "single", False)["status"]
    # every file the page handed out lives under --out (Gradio's uploads and caches included)
    assert Path(os.environ["GRADIO_TEMP_DIR"]).is_relative_to(app.out)
    assert any((app.out / "gradio").rglob("bomb.png"))


def test_python_m_app_serves_the_embedded_default_on_localhost(tmp_path):
    """`python -m app` with no demo run: the tiny toy model with its notice, the built-in
    synthetic examples, bound to 127.0.0.1."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "app", "--out", str(tmp_path / "out")]
    cmd += ["--demo-dir", str(tmp_path / "no-demo")]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        url, lines, deadline = None, [], time.monotonic() + 240
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("[app] serving "):
                url = line.split()[-1]
        assert url is not None, "".join(lines)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "config", timeout=30) as response:
            config = response.read().decode()
        assert "a randomly initialised tiny Qwen2.5-VL (a toy model)" in config
        assert "synthetic-2024-0000000" in config  # the built-in examples
        assert (tmp_path / "out" / "tiny_vlm" / "config.json").is_file()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_package_and_the_app_module_import_without_gradio():
    """gradio is imported only when the page is built: `import inference` and the CLI never need it."""
    code = "import sys; sys.modules['gradio'] = None; import inference, app.editing_app, inference.cli; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr
