"""The tiny offline models load through the production Auto classes and run on CPU."""

from __future__ import annotations

import torch
from PIL import Image

from inference.chat_backends import VISION_TOKENS
from inference.prompts import decomposition_prompt, user_message
from inference.protocol import ALL_TAG_STRINGS
from inference.tiny import build_tiny_vlm, build_tokenizer


def _image(color="red", size=(64, 48)):
    return Image.new("RGB", size, color)


def test_vlm_loads_with_auto_classes_and_generates(tiny_vlm_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm_dir).eval()
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    messages = user_message(decomposition_prompt("make the square blue"), [_image()])
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system") and "<|vision_start|><|image_pad|><|vision_end|>" in text
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 4  # 64x48 -> 56x56 -> 4 tokens
    bad = [[processor.tokenizer.convert_tokens_to_ids(t)] for t in VISION_TOKENS]
    out = model.generate(**inputs, max_new_tokens=12, do_sample=True, bad_words_ids=bad)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert 0 < len(new) <= 12
    assert isinstance(processor.decode(new, skip_special_tokens=True), str)


def test_vlm_is_deterministic_and_round_trips(tmp_path):
    from transformers import AutoModelForImageTextToText

    a = build_tiny_vlm(tmp_path / "a", seed=3)
    b = build_tiny_vlm(tmp_path / "b", seed=3)
    ma = AutoModelForImageTextToText.from_pretrained(a)
    mb = AutoModelForImageTextToText.from_pretrained(b)
    for (na, pa), (nb, pb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_tags_are_single_tokens_that_survive_skip_special():
    tok = build_tokenizer(["recolor the red square to blue"])
    text = '<think>x</think><action>["recolor"]</action><subjects>[]</subjects><goals>[]</goals>'
    pieces = tok.tokenize(text)
    for tag in ALL_TAG_STRINGS:
        assert tag in pieces
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_flux_kontext_edits_at_requested_size(tiny_flux_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_flux_dir)
    assert type(pipe).__name__ == "FluxKontextPipeline"
    kw = dict(
        prompt="make it blue",
        height=64,
        width=64,
        max_area=64 * 64,
        _auto_resize=False,
        num_inference_steps=2,
        guidance_scale=2.5,
    )
    a = pipe(image=_image(size=(64, 64)), generator=torch.Generator().manual_seed(0), **kw).images[0]
    b = pipe(image=_image(size=(64, 64)), generator=torch.Generator().manual_seed(0), **kw).images[0]
    assert a.size == (64, 64) and a.tobytes() == b.tobytes()


def test_qwen_image_edit_edits(tiny_qwen_edit_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_qwen_edit_dir)
    assert type(pipe).__name__ == "QwenImageEditPipeline"
    out = pipe(
        image=_image(size=(64, 64)),
        prompt="make it blue",
        height=64,
        width=64,
        num_inference_steps=2,
        true_cfg_scale=1.0,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert out.size == (64, 64)


def test_cli_builds_selected_models(tmp_path):
    from inference.tiny import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("recolor the red circle\nremove the blue square\n")
    main(["--out", str(tmp_path / "m"), "--only", "vlm", "--corpus", str(corpus)])
    assert (tmp_path / "m" / "vlm" / "config.json").exists()
    assert not (tmp_path / "m" / "flux_kontext").exists()


def test_qwen3_vl_variant_loads_and_generates(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = build_tiny_vlm(tmp_path / "q3", arch="qwen3_vl")
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    text = processor.apply_chat_template(
        user_message("hi", [_image()]), add_generation_prompt=True, tokenize=False
    )
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6, do_sample=True)
    assert out.shape[1] > inputs["input_ids"].shape[1]
