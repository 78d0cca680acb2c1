"""Tiny, randomly initialised models of the exact production classes, built offline.

Our machines have no GPU and no model hub. Every path that at scale loads Qwen2.5-VL-7B-Instruct,
FLUX.1-Kontext-dev or Qwen-Image-Edit is exercised on CPU with these: same classes, same
`from_pretrained` folders, tiny sizes. Deterministic for a given seed and corpus.

    python -m inference.tiny --out outputs/tiny            # all of them
    python -m inference.tiny --out DIR --only vlm --corpus data.txt
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from inference.protocol import (
    ACTION_VOCABULARY,
    ALL_TAG_STRINGS,
    STEPS,
    Decomposition,
    EditPlan,
    render_decomposition,
    render_plan,
)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Protocol tags become single, non-special tokens: they survive skip_special_tokens decoding.
TAG_TOKENS = ALL_TAG_STRINGS + (f"<{STEPS}>", f"</{STEPS}>")
QWEN_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
# The Qwen2-VL / Qwen2.5-VL chat template (as shipped with the Instruct checkpoints).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Smallest image side (pixels) after the processor's resize: 56 = 4 patches of 14.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112


@dataclass(frozen=True)
class TinyVLMSize:
    """Sizes of the tiny Qwen2.5-VL. Defaults: the CPU GRPO setting measured to learn in minutes."""

    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    vision_hidden: int = 64
    vision_depth: int = 2
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS


def default_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on when no corpus is given: prompts and protocol answers."""
    from inference import prompts

    example = Decomposition(("recolor",), ("coat", "hair"), ("scarlet red",), think="two subjects")
    lines = [
        prompts.decomposition_prompt("Change the color of her coat and hair to scarlet red"),
        prompts.sequencing_prompt("Change the color of her coat and hair to scarlet red", example),
        prompts.judge_prompt("make the sky blue"),
        render_decomposition(example),
        render_plan(EditPlan(("Recolor the coat to scarlet red", "Recolor the hair to scarlet red"))),
        "You are a helpful assistant.",
        " ".join(ACTION_VOCABULARY),
        "fulfillment quality preservation reasoning 0 1 2 3 4 5 6 7 8 9 10",
    ]
    return lines


def _split_at_tags(text: str) -> list[str]:
    """Cut corpus lines at protocol tags so BPE merges like `["` form (measured pitfall)."""
    pattern = "|".join(re.escape(t) for t in TAG_TOKENS + QWEN_SPECIAL_TOKENS)
    return [p for p in re.split(pattern, text) if p]


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 2000):
    """A byte-level BPE Qwen2 tokenizer trained on `corpus` (deterministic), with the real chat template."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    lines = list(corpus) if corpus is not None else []
    lines += default_corpus()
    pieces = [p for line in lines for p in _split_at_tags(line)]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(QWEN_SPECIAL_TOKENS),
    )
    tok.train_from_iterator(pieces, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAG_TOKENS])
    hf = Qwen2TokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    hf.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return hf


#: Supported tiny VLM architectures: Qwen2.5-VL (the paper's agent) and Qwen3-VL (its Table 3 ablation).
VLM_ARCHS = ("qwen2_5_vl", "qwen3_vl")


def build_processor(tokenizer, size: TinyVLMSize = TinyVLMSize(), arch: str = "qwen2_5_vl"):
    """The real processor class of `arch` around the tiny tokenizer."""
    import transformers as tf

    if arch == "qwen3_vl":  # 16-pixel patches: same number of image tokens as 14-pixel ones at this scale
        scale = 16 * 16 / (14 * 14)
        pixels = {"shortest_edge": int(size.min_pixels * scale), "longest_edge": int(size.max_pixels * scale)}
        image_processor = tf.Qwen2VLImageProcessor(patch_size=16, merge_size=2, size=pixels)
        video_processor = tf.Qwen3VLVideoProcessor(patch_size=16, merge_size=2, size=pixels)
        cls = tf.Qwen3VLProcessor
    else:
        image_processor = tf.Qwen2VLImageProcessor(min_pixels=size.min_pixels, max_pixels=size.max_pixels)
        video_processor = tf.Qwen2VLVideoProcessor(min_pixels=size.min_pixels, max_pixels=size.max_pixels)
        cls = tf.Qwen2_5_VLProcessor
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


def build_tiny_vlm(
    out_dir: str | Path,
    corpus: Iterable[str] | None = None,
    seed: int = 0,
    size: TinyVLMSize = TinyVLMSize(),
    arch: str = "qwen2_5_vl",
) -> Path:
    """Save a tiny VLM (Qwen2_5_VLForConditionalGeneration, or Qwen3VLForConditionalGeneration with
    arch="qwen3_vl") + processor to `out_dir`; returns the folder.

    Loads back with `AutoProcessor.from_pretrained(out_dir)` and
    `AutoModelForImageTextToText.from_pretrained(out_dir)`, like the 7B checkpoint.
    """
    import torch
    import transformers as tf

    if arch not in VLM_ARCHS:
        raise ValueError(f"unknown tiny VLM arch {arch!r}; choose one of {VLM_ARCHS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus)
    processor = build_processor(tokenizer, size, arch)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    head_dim = size.text_hidden // size.text_heads
    half = head_dim // 2  # mrope sections must sum to head_dim / 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=size.text_hidden,
        intermediate_size=2 * size.text_hidden,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        num_key_value_heads=size.text_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 1e6},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=size.vision_depth,
        hidden_size=size.vision_hidden,
        intermediate_size=2 * size.vision_hidden,
        num_heads=2,
        out_hidden_size=size.text_hidden,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    if arch == "qwen3_vl":
        text.update(head_dim=head_dim)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision.update(patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0])
        config_cls, model_cls = tf.Qwen3VLConfig, tf.Qwen3VLForConditionalGeneration
    else:
        vision.update(patch_size=14, window_size=112, fullatt_block_indexes=[size.vision_depth - 1])
        config_cls, model_cls = tf.Qwen2_5_VLConfig, tf.Qwen2_5_VLForConditionalGeneration
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.generation_config = tf.GenerationConfig(
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _tiny_clip(seed: int):
    """CLIP text encoder + tokenizer over a byte-level vocabulary with no merges."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    torch.manual_seed(seed)
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    return tokenizer, encoder


def _tiny_t5(seed: int):
    """T5 encoder + a tokenizer over a hand-written Unigram vocabulary (the trainer isn't reproducible)."""
    import torch
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()[]"]
    pieces += [("\u2581" + c, -2.5) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)
    torch.manual_seed(seed)
    encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(pieces),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
        )
    ).eval()
    return tokenizer, encoder


def build_tiny_flux_kontext(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny FluxKontextPipeline (FLUX.1-Kontext-dev's classes) loadable with DiffusionPipeline."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip_tok, clip = _tiny_clip(seed)
    t5_tok, t5 = _tiny_t5(seed)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=[4, 4, 8],
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=(8, 8, 16, 16),
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
        sample_size=64,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxKontextPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )
    pipe.save_pretrained(out)
    return out


def build_tiny_qwen_image_edit(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny QwenImageEditPipeline (Qwen-Image-Edit's classes) loadable with DiffusionPipeline."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import AutoModelForImageTextToText, Qwen2VLProcessor

    out = Path(out_dir)
    size = TinyVLMSize(text_hidden=64, text_layers=2, text_heads=4, text_kv_heads=2, vision_hidden=32)
    vlm_dir = build_tiny_vlm(out / "_text_encoder_src", seed=seed, size=size)
    text_encoder = AutoModelForImageTextToText.from_pretrained(vlm_dir).eval()
    tokenizer = build_tokenizer()
    processor = Qwen2VLProcessor(
        image_processor=build_processor(tokenizer, size).image_processor,
        tokenizer=tokenizer,
        video_processor=build_processor(tokenizer, size).video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=size.text_hidden,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ).eval()
    vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        time_shift_type="exponential",
        shift_terminal=0.02,
    )
    pipe = QwenImageEditPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        processor=processor,
        transformer=transformer,
    )
    pipe.save_pretrained(out)
    import shutil

    shutil.rmtree(vlm_dir, ignore_errors=True)
    return out


BUILDERS = {
    "vlm": lambda out, corpus, seed: build_tiny_vlm(out, corpus=corpus, seed=seed),
    "qwen3_vl": lambda out, corpus, seed: build_tiny_vlm(out, corpus=corpus, seed=seed, arch="qwen3_vl"),
    "flux_kontext": lambda out, corpus, seed: build_tiny_flux_kontext(out, seed=seed),
    "qwen_image_edit": lambda out, corpus, seed: build_tiny_qwen_image_edit(out, seed=seed),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="folder; one sub-folder per model")
    parser.add_argument("--only", choices=sorted(BUILDERS), action="append", help="build only these")
    parser.add_argument("--corpus", help="text file (one line per example) the VLM tokenizer is trained on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = Path(args.corpus).read_text(encoding="utf-8").splitlines() if args.corpus else None
    for name in args.only or sorted(BUILDERS):
        path = BUILDERS[name](Path(args.out) / name, corpus, args.seed)
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
