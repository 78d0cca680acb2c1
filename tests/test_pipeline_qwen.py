"""Every pipeline mode with the tiny Qwen-Image-Edit pipeline and the transformers backend (few calls:
the pipeline resizes every input to ~1 MP, 2-10 s per call on CPU)."""

from __future__ import annotations

import pytest
from PIL import Image

from inference.agents import DecompositionAgent, VLMSequencer
from inference.chat import Sampling
from inference.chat_backends import make_backend
from inference.editors import make_editor
from inference.pipeline import MODES, EditingPipeline, read_traces
from inference.records import read_records
from inference.synthetic_items import write_synthetic_eval_set
from inference.teaching import taught_on_first_item

SAMPLING = Sampling(temperature=0.0, max_new_tokens=96)


@pytest.fixture(scope="module")
def taught(tmp_path_factory, tiny_vlm_dir):
    eval_set = write_synthetic_eval_set(tmp_path_factory.mktemp("eval"), 3, seed=0, max_edits=2)
    first, folder = taught_on_first_item(eval_set, tiny_vlm_dir)
    return first, make_backend("transformers", folder, batch_size=2)


def _agents(backend, attempts=2):
    return DecompositionAgent(backend, SAMPLING, max_attempts=attempts), VLMSequencer(
        backend, SAMPLING, attempts
    )


def test_every_mode_with_qwen_image_edit(taught, tiny_qwen_edit_dir, tmp_path):
    first, backend = taught
    editor = make_editor(
        "qwen_image_edit",
        model=tiny_qwen_edit_dir,
        resolution="input",
        num_inference_steps=2,
        true_cfg_scale=1.0,
    )
    pipe = EditingPipeline(editor, *_agents(backend))
    item = next(i for i in read_records(first.image.parents[1]) if i.id == first.id)
    for mode in MODES:
        assert pipe.run([item], tmp_path, mode, progress=False).failed == 0
        (t,) = read_traces(tmp_path / mode)
        assert Image.open(t["output_image"]).size == (64, 64)
        assert t["models"]["editor_settings"]["pipeline"] == "QwenImageEditPipeline"
