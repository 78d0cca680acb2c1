"""Editors: tiny FluxKontext / QwenImageEdit pipelines, hosted editors against real HTTP servers on
127.0.0.1, and the tool editor on synthetic scenes."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from local_server import LocalServer
from PIL import Image

from inference.editors import EditorError, editor_defaults, make_editor
from inference.http_client import HTTPRequestError
from inference.scenes import scene_of
from inference.synthetic_items import generate_items


def _png_b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_configured_defaults_are_the_models_real_ones():
    flux, qwen = editor_defaults("flux_kontext"), editor_defaults("qwen_image_edit")
    assert flux["model"] == "black-forest-labs/FLUX.1-Kontext-dev"
    assert (flux["num_inference_steps"], flux["guidance_scale"], flux["resolution"]) == (28, 2.5, "auto")
    assert qwen["model"] == "Qwen/Qwen-Image-Edit"
    assert (qwen["num_inference_steps"], qwen["true_cfg_scale"], qwen["negative_prompt"]) == (50, 4.0, " ")
    with pytest.raises(ValueError, match="unknown editor 'nope'"):
        editor_defaults("nope")


@pytest.fixture(scope="module")
def flux(tiny_flux_dir):
    return make_editor("flux_kontext", model=tiny_flux_dir, resolution="input", num_inference_steps=2)


def test_flux_kontext_edits_at_the_input_size_deterministically(flux):
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    a = flux.edit(image, "make it blue", seed=3)
    b = flux.edit(image, "make it blue", seed=3)
    c = flux.edit(image, "make it blue", seed=4)
    assert a.size == (64, 48) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    settings = flux.settings()
    assert settings["pipeline"] == "FluxKontextPipeline" and settings["guidance_scale"] == 2.5


def test_flux_kontext_size_kwargs_disable_the_1mp_resize(flux):
    kw = flux.size_kwargs(Image.new("RGB", (70, 50)))
    assert kw == {"width": 64, "height": 48, "max_area": 64 * 48, "_auto_resize": False}


def test_diffusers_editor_refuses_an_image_the_models_cannot_take(flux):
    with pytest.raises(EditorError, match="image_too_small: flux_kontext input: 4000x8"):
        flux.edit(Image.new("RGB", (4000, 8)), "make it red")


def test_qwen_image_edit_edits_at_the_input_size(tiny_qwen_edit_dir):
    editor = make_editor(
        "qwen_image_edit",
        model=tiny_qwen_edit_dir,
        resolution="input",
        num_inference_steps=2,
        true_cfg_scale=1.0,
    )
    out = editor.edit(Image.new("RGB", (48, 64), (10, 200, 30)), "make it red", seed=0)
    assert out.size == (48, 64) and out.mode == "RGB"


def test_diffusers_editor_checks_the_pipeline_class(tiny_flux_dir):
    with pytest.raises(ValueError, match="holds a FluxKontextPipeline.*needs a QwenImageEditPipeline"):
        make_editor("qwen_image_edit", model=tiny_flux_dir)


def test_openai_images_editor_posts_multipart_and_decodes(monkeypatch):
    monkeypatch.setenv("TEST_IMG_KEY", "sk-img")
    returned = Image.new("RGB", (32, 32), (0, 255, 0))

    def respond(req):
        return 200, {}, {"created": 0, "data": [{"b64_json": _png_b64(returned)}]}

    with LocalServer(respond) as server:
        editor = make_editor(
            "openai_images",
            base_url=server.url + "/v1",
            api_key_env="TEST_IMG_KEY",
            backoff_s=0.01,
            size="1024x1024",
        )
        out = editor.edit(Image.new("RGB", (64, 48), "red"), "make it green")
    assert out.size == (64, 48) and out.getpixel((5, 5)) == (0, 255, 0)
    req = server.requests[0]
    assert req["path"] == "/v1/images/edits"
    assert req["headers"]["content-type"].startswith("multipart/form-data")
    assert req["headers"]["authorization"] == "Bearer sk-img"
    body = req["body"]
    assert b'name="prompt"' in body and b"make it green" in body and b'name="model"' in body
    assert b'name="image"; filename="image.png"' in body and b"\x89PNG" in body and b"1024x1024" in body


def test_openai_images_editor_error_is_clear():
    with LocalServer(lambda req: (400, {}, {"error": {"message": "image too small"}})) as server:
        editor = make_editor("openai_images", base_url=server.url, api_key_env=None)
        with pytest.raises(HTTPRequestError, match="HTTP 400.*image too small"):
            editor.edit(Image.new("RGB", (16, 16)), "x")


def test_gemini_editor_generate_content_round_trip(monkeypatch):
    monkeypatch.setenv("TEST_GEMINI_KEY", "g-key")
    returned = Image.new("RGB", (64, 48), (1, 2, 3))
    calls = {"n": 0}

    def respond(req):
        calls["n"] += 1
        if calls["n"] == 1:
            return 503, {}, {"error": {"message": "overloaded"}}
        parts = [
            {"text": "here you go"},
            {"inlineData": {"mimeType": "image/png", "data": _png_b64(returned)}},
        ]
        return 200, {}, {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}

    with LocalServer(respond) as server:
        editor = make_editor("gemini", base_url=server.url, api_key_env="TEST_GEMINI_KEY", backoff_s=0.01)
        out = editor.edit(Image.new("RGB", (64, 48), "red"), "darken it", seed=5)
    assert out.getpixel((0, 0)) == (1, 2, 3)
    req = server.requests[-1]
    assert req["path"] == "/models/gemini-2.5-flash-image:generateContent"
    assert req["headers"]["x-goog-api-key"] == "g-key"
    body = json.loads(req["body"])
    parts = body["contents"][0]["parts"]
    assert parts[0]["inline_data"]["mime_type"] == "image/png" and parts[1]["text"] == "darken it"
    assert body["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert body["generationConfig"]["seed"] == 5


def test_gemini_editor_without_image_names_the_reason():
    body = {"candidates": [{"content": {"parts": [{"text": "I can't do that"}]}, "finishReason": "SAFETY"}]}
    with LocalServer(lambda req: (200, {}, body)) as server:
        editor = make_editor("gemini", base_url=server.url, api_key_env=None)
        with pytest.raises(EditorError, match="no image.*SAFETY.*I can't do that"):
            editor.edit(Image.new("RGB", (16, 16)), "x")


def test_tool_editor_executes_canonical_sub_requests_exactly():
    editor = make_editor("tool")
    for item in generate_items(20, seed=3):
        out = item.image
        for step in item.plan.sub_requests:
            out = editor.edit(out, step)
        assert scene_of(out) == item.target_scene
        assert np.array_equal(np.asarray(out), np.asarray(item.target_image))


def test_tool_editor_refuses_images_without_a_scene_and_unknown_text():
    editor = make_editor("tool")
    with pytest.raises(EditorError, match="carries no synthetic scene"):
        editor.edit(Image.new("RGB", (64, 64)), "Brighten the image")
    item = next(generate_items(1, seed=0))
    with pytest.raises(ValueError, match="cannot execute edit instruction"):
        editor.edit(item.image, "paint a moustache on it")


def test_a_hosted_editors_image_is_decoded_by_the_one_loader():
    """An RGBA answer means the same pixels as that PNG on disk: transparent on white, RGB."""
    import base64
    import io

    from PIL import Image

    from inference.fileio import load_rgb
    from inference.http_client import HTTPRequestError, decode_image

    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    decoded = decode_image(base64.b64encode(buf.getvalue()).decode())
    assert decoded.mode == "RGB" and decoded.getpixel((0, 0)) == load_rgb(
        buf.getvalue(), check=False
    ).getpixel((0, 0))
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(HTTPRequestError, match="cannot be decoded"):
        decode_image(base64.b64encode(b"not an image").decode())
