"""The pipeline end to end with the tiny models of the real classes on CPU: every mode with
FLUX.1-Kontext's pipeline and the transformers backend, exact targets with the tool editor,
determinism, and a model that never answers in format. (Qwen-Image-Edit: test_pipeline_qwen.py;
a killed and resumed run: test_pipeline_resume.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inference.agents import DecompositionAgent, VLMSequencer
from inference.chat import Sampling
from inference.chat_backends import make_backend
from inference.editors import make_editor
from inference.pipeline import MODES, EditingPipeline, read_traces
from inference.protocol import render_decomposition
from inference.records import read_records
from inference.synthetic_items import write_synthetic_eval_set
from inference.teaching import taught_on_first_item

SAMPLING = Sampling(temperature=0.0, max_new_tokens=96)


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    return write_synthetic_eval_set(tmp_path_factory.mktemp("eval"), 3, seed=0, max_edits=2)


@pytest.fixture(scope="module")
def taught(eval_set, tiny_vlm_dir):
    """The tiny VLM taught the decomposition and the plan of the first item (like a trained checkpoint)."""
    first, folder = taught_on_first_item(eval_set, tiny_vlm_dir)
    return first, make_backend("transformers", folder, batch_size=2)


@pytest.fixture(scope="module")
def flux(tiny_flux_dir):
    return make_editor(
        "flux_kontext", model=tiny_flux_dir, resolution="input", num_inference_steps=2, max_sequence_length=64
    )


def _agents(backend, attempts=2):
    return DecompositionAgent(backend, SAMPLING, max_attempts=attempts), VLMSequencer(
        backend, SAMPLING, attempts
    )


def test_every_mode_with_flux_kontext_and_the_transformers_backend(taught, eval_set, flux, tmp_path):
    first, backend = taught
    pipe = EditingPipeline(flux, *_agents(backend), batch_size=2)
    for mode in MODES:
        summary = pipe.run(read_records(eval_set), tmp_path, mode, progress=False)
        assert summary.done == 3
        traces = {t["id"]: t for t in read_traces(tmp_path / mode)}
        assert len(traces) == 3
        for t in traces.values():
            assert t["error"] is None or "no parseable answer" in t["error"]
            if t["error"] is None:
                assert Image.open(t["output_image"]).size == (64, 64)
        t = traces[first.id]
        assert t["error"] is None and t["editor"] == "flux_kontext"
        assert t["models"]["editor_settings"]["pipeline"] == "FluxKontextPipeline"
        assert t["timings"]["edit_s"] > 0 and t["timings"]["total_s"] >= t["timings"]["edit_s"]
        if mode == "original":
            assert t["decomposition"] is None and t["plan"] is None
        else:
            assert t["decomposition"]["raw"] == render_decomposition(first.decomposition)
            assert t["decomposition"]["format_ok"] is True and t["decomposition"]["attempts"] == 1
            assert t["decomposition"]["parsed"]["subjects"] == list(first.decomposition.subjects)
            assert t["plan"] == list(first.plan.sub_requests)
            assert t["models"]["decomposition"] == backend.model_id
            if mode == "single":  # asked here; multi reuses the answers and spends no agent time
                assert t["timings"]["decompose_s"] > 0 and t["timings"]["sequence_s"] > 0
            else:
                assert t["reused"] == ["decompose", "sequence"] and t["timings"]["decompose_s"] == 0.0


def test_vlm_agents_with_the_tool_editor_give_the_exact_target(taught, tmp_path):
    first, backend = taught
    item = next(i for i in read_records(first.image.parents[1]) if i.id == first.id)
    pipe = EditingPipeline(make_editor("tool"), *_agents(backend))
    for mode in ("single", "multi"):
        pipe.run([item], tmp_path, mode, progress=False)
        (t,) = read_traces(tmp_path / mode)
        assert t["error"] is None
        out = np.asarray(Image.open(t["output_image"]).convert("RGB"))
        assert np.array_equal(out, np.asarray(Image.open(first.references[0]).convert("RGB")))


def test_same_input_and_seed_give_the_same_image(taught, eval_set, flux, tmp_path):
    _, backend = taught
    for name in ("a", "b"):
        EditingPipeline(flux, *_agents(backend), seed=5, batch_size=3).run(
            read_records(eval_set), tmp_path / name, "single", progress=False
        )
    pngs = sorted((tmp_path / "a" / "single").glob("*.png"))
    assert pngs
    for png in pngs:
        assert png.read_bytes() == (tmp_path / "b" / "single" / png.name).read_bytes()


def test_a_model_that_never_answers_in_format_is_a_per_item_error(tiny_vlm_dir, eval_set, flux, tmp_path):
    backend = make_backend("transformers", tiny_vlm_dir, batch_size=4)  # random weights: never parseable
    short = Sampling(temperature=0.0, max_new_tokens=24)
    pipe = EditingPipeline(
        flux, DecompositionAgent(backend, short, max_attempts=2), VLMSequencer(backend, short)
    )
    summary = pipe.run(read_records(eval_set), tmp_path, "single", progress=False)
    assert (summary.done, summary.failed) == (3, 3)
    for t in read_traces(tmp_path / "single"):
        assert t["error"].startswith("decomposition: no parseable answer after 2 attempt(s)")
        assert t["decomposition"]["parsed"] is None and isinstance(t["decomposition"]["raw"], str)
        assert t["output_image"] is None and t["plan"] is None
