"""The training's image bound at inference (recipes/image_bound.py writes it into the exported folder):
read back from both processor-config shapes, applied by the OpenAI-compatible client's resize exactly as
a Qwen-VL processor with that bound resizes, and handed to vLLM explicitly."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from inference.chat import Sampling
from inference.chat_backends import bounded_image, image_bound, make_backend
from inference.prompts import user_message

BOUND = {"min_pixels": 3136, "max_pixels": 8 * 28 * 28}


def test_the_bound_is_read_from_either_processor_config(tmp_path):
    from recipes import image_bound as record

    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": {"size": {}}}))
    assert image_bound(tmp_path) == {}
    record.apply(tmp_path, BOUND)
    assert image_bound(tmp_path) == BOUND
    (tmp_path / "processor_config.json").unlink()
    (tmp_path / "preprocessor_config.json").write_text("{}")
    record.apply(tmp_path, BOUND)
    assert image_bound(tmp_path) == BOUND
    assert image_bound("Qwen/Qwen2.5-VL-7B-Instruct") == {}


def test_the_client_resize_matches_the_processors(tiny_vlm_dir):
    from transformers import AutoProcessor

    photo = Image.new("RGB", (4032, 3024), (10, 20, 30))
    small = bounded_image(photo, BOUND)
    assert small.width * small.height <= BOUND["max_pixels"] and small.width % 28 == small.height % 28 == 0
    processor = AutoProcessor.from_pretrained(tiny_vlm_dir).image_processor
    as_sent = processor(images=[small], return_tensors="pt", **BOUND)["image_grid_thw"]
    as_trained = processor(images=[photo], return_tensors="pt", **BOUND)["image_grid_thw"]
    assert as_sent.tolist() == as_trained.tolist()
    tiny = Image.new("RGB", (56, 56))
    assert bounded_image(tiny, BOUND) is tiny


def test_the_openai_client_sends_images_at_the_trained_bound():
    backend = make_backend(
        "openai", "served", base_url="http://127.0.0.1:9/v1", api_key_env=None, image_bound=BOUND
    )
    try:
        photo = Image.new("RGB", (4032, 3024), (10, 20, 30))
        body = backend.payload(user_message("edit it", [photo]), Sampling())
        url = next(
            p["image_url"]["url"]
            for m in body["messages"]
            for p in m["content"]
            if p.get("type") == "image_url"
        )
        import base64
        import io

        sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert sent.size == bounded_image(photo, BOUND).size
    finally:
        backend.close()
    with pytest.raises(ValueError, match="OpenAI-compatible"):
        make_backend("vllm", "m", image_bound=BOUND)
