"""Editing agents (paper Algorithm 1, step 14): diffusers FLUX.1-Kontext-dev and Qwen-Image-Edit,
hosted editors over HTTP (an OpenAI-images-compatible edit endpoint; Gemini image editing, the paper's
Nano Banana) and a deterministic tool editor for the synthetic scenes of `inference.scenes`.

Each editor is picked by name; its defaults (steps, guidance, resolution, endpoint) live in
`inference/config/editors.yaml` and any of them can be overridden::

    editor = make_editor("flux_kontext", model="outputs/tiny/flux_kontext", num_inference_steps=2)
    edited = editor.edit(image, "Recolor the red circle to blue", seed=0)
"""

from __future__ import annotations

import abc
import base64
import logging
from pathlib import Path
from typing import Any

from PIL import Image

from inference.fileio import png_bytes
from inference.http_client import CircuitBreaker, RetryPolicy, api_key_from_env, decode_image, post

log = logging.getLogger(__name__)

EDITOR_CONFIG = Path(__file__).resolve().parent / "config" / "editors.yaml"


class EditorError(RuntimeError):
    """An editor could not produce an image for an instruction."""


class Editor(abc.ABC):
    """Edits one image according to one instruction. Same image, instruction and seed: same image out
    (for the local editors; hosted ones take the seed only where their API has one)."""

    #: Registry name (recorded as the trace's `editor`).
    name: str = "editor"
    #: Model identifier (hub id, folder, or hosted model name).
    model_id: str = "unknown"

    @abc.abstractmethod
    def edit(self, image: Image.Image, instruction: str, seed: int = 0) -> Image.Image:
        """The edited image (RGB)."""

    def settings(self) -> dict[str, Any]:
        """What a trace records about this editor besides its name and model."""
        return {}


def _match_size(out: Image.Image, size: tuple[int, int], match: bool) -> Image.Image:
    out = out.convert("RGB")
    if match and out.size != tuple(size):
        out = out.resize(size, Image.Resampling.LANCZOS)
    return out


# ---------------------------------------------------------------------------------------- diffusers


class DiffusersEditor(Editor):
    """A diffusers image-editing pipeline loaded with `DiffusionPipeline.from_pretrained`.

    `resolution`: `auto` lets the pipeline pick its native ~1 MP size (the models' real behaviour);
    `input` generates at the input size (rounded down to the latent grid), what the tiny CPU tests use.
    `match_input_size` resizes the output back to the input size, so it can be compared pixel by pixel.
    """

    #: The pipeline class this editor expects (checked after loading).
    pipeline_class: str = ""

    def __init__(
        self,
        model: str | Path,
        device: str | None = None,
        dtype: str = "auto",
        resolution: str = "auto",
        match_input_size: bool = True,
        cpu_offload: bool = False,
        **call_kwargs: Any,
    ):
        import torch
        from diffusers import DiffusionPipeline

        if resolution not in ("auto", "input"):
            raise ValueError(f"resolution must be 'auto' or 'input', got {resolution!r}")
        self.model_id = str(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.dtype = dtype
        self.pipe = DiffusionPipeline.from_pretrained(model, dtype=getattr(torch, dtype))
        if type(self.pipe).__name__ != self.pipeline_class:
            raise ValueError(
                f"{model} holds a {type(self.pipe).__name__}, but the {self.name} editor needs a "
                f"{self.pipeline_class}"
            )
        if cpu_offload:
            self.pipe.enable_model_cpu_offload()
        else:
            self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.resolution = resolution
        self.match_input_size = match_input_size
        self.call_kwargs = call_kwargs

    def settings(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline_class,
            "dtype": self.dtype,
            "resolution": self.resolution,
            "match_input_size": self.match_input_size,
            **self.call_kwargs,
        }

    def _grid(self) -> int:
        return self.pipe.vae_scale_factor * 2

    def size_kwargs(self, image: Image.Image) -> dict[str, Any]:
        if self.resolution == "auto":
            return {}
        g = self._grid()
        w, h = max(g, image.width // g * g), max(g, image.height // g * g)
        return {"width": w, "height": h}

    def edit(self, image: Image.Image, instruction: str, seed: int = 0) -> Image.Image:
        import torch

        from inference.fileio import BadImage, check_fit

        try:  # a strip or a speck would end in a ZeroDivisionError deep in the pipeline's resizing
            check_fit(image.width, image.height, f"{self.name} input")
        except BadImage as exc:
            raise EditorError(str(exc)) from None
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.inference_mode():
            out = self.pipe(
                image=image.convert("RGB"),
                prompt=instruction,
                generator=generator,
                **self.size_kwargs(image),
                **self.call_kwargs,
            ).images[0]
        return _match_size(out, image.size, self.match_input_size)


class FluxKontextEditor(DiffusersEditor):
    """FLUX.1-Kontext-dev (`FluxKontextPipeline`)."""

    name = "flux_kontext"
    pipeline_class = "FluxKontextPipeline"

    def size_kwargs(self, image: Image.Image) -> dict[str, Any]:
        kw = super().size_kwargs(image)
        if kw:  # without these Kontext silently resizes to its ~1 MP preferred resolutions
            kw.update(max_area=kw["width"] * kw["height"], _auto_resize=False)
        return kw


class QwenImageEditor(DiffusersEditor):
    """Qwen-Image-Edit (`QwenImageEditPipeline`); it always conditions on a ~1 MP copy of the input."""

    name = "qwen_image_edit"
    pipeline_class = "QwenImageEditPipeline"


# ---------------------------------------------------------------------------------------- HTTP


class _HTTPEditor(Editor):
    def __init__(
        self,
        model: str,
        base_url: str,
        api_key_env: str | None,
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 2.0,
        match_input_size: bool = True,
        **params: Any,
    ):
        import httpx

        self.model_id = model
        self.base_url = base_url.rstrip("/")
        self.policy = RetryPolicy(timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s)
        self.match_input_size = match_input_size
        self.params = params
        self._key = api_key_from_env(api_key_env)
        if api_key_env and not self._key:
            log.warning("environment variable %s is not set; calling %s without a key", api_key_env, base_url)
        self._client = httpx.Client()
        #: A dead editor endpoint stops the run after a few requests (`ServerDown`), not item by item.
        self.breaker = CircuitBreaker(self.base_url)

    def settings(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "match_input_size": self.match_input_size, **self.params}


class OpenAIImagesEditor(_HTTPEditor):
    """An OpenAI-images-compatible `POST {base_url}/images/edits` (multipart: model, prompt, image)."""

    name = "openai_images"

    def __init__(
        self,
        model: str = "gpt-image-1",
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        **kwargs: Any,
    ):
        super().__init__(model, base_url, api_key_env, **kwargs)

    def edit(self, image: Image.Image, instruction: str, seed: int = 0) -> Image.Image:
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        fields = {"model": self.model_id, "prompt": instruction, "n": "1"}
        fields.update({k: str(v) for k, v in self.params.items()})
        files = {"image": ("image.png", png_bytes(image.convert("RGB")), "image/png")}
        body = post(
            self._client,
            f"{self.base_url}/images/edits",
            self.policy,
            data=fields,
            files=files,
            headers=headers,
            breaker=self.breaker,
        )
        data = body.get("data") or []
        if not data:
            raise EditorError(f"{self.name}: response has no image: {str(body)[:300]}")
        if data[0].get("b64_json"):
            out = decode_image(data[0]["b64_json"])
        elif data[0].get("url"):
            resp = self._client.get(data[0]["url"], timeout=self.policy.timeout_s)
            resp.raise_for_status()
            out = decode_image(base64.b64encode(resp.content).decode("ascii"))
        else:
            raise EditorError(
                f"{self.name}: response item has neither b64_json nor url: {str(data[0])[:300]}"
            )
        return _match_size(out, image.size, self.match_input_size)


class GeminiEditor(_HTTPEditor):
    """Gemini image editing (Nano Banana) via `POST {base_url}/models/{model}:generateContent`."""

    name = "gemini"

    def __init__(
        self,
        model: str = "gemini-2.5-flash-image",
        base_url: str = "https://generativelanguage.googleapis.com/v1beta",
        api_key_env: str | None = "GEMINI_API_KEY",
        **kwargs: Any,
    ):
        super().__init__(model, base_url, api_key_env, **kwargs)

    def payload(self, image: Image.Image, instruction: str, seed: int) -> dict[str, Any]:
        b64 = base64.b64encode(png_bytes(image.convert("RGB"))).decode("ascii")
        return {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"inline_data": {"mime_type": "image/png", "data": b64}},
                        {"text": instruction},
                    ],
                }
            ],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "seed": int(seed), **self.params},
        }

    def edit(self, image: Image.Image, instruction: str, seed: int = 0) -> Image.Image:
        headers = {"x-goog-api-key": self._key} if self._key else {}
        url = f"{self.base_url}/models/{self.model_id}:generateContent"
        body = post(
            self._client,
            url,
            self.policy,
            json=self.payload(image, instruction, seed),
            headers=headers,
            breaker=self.breaker,
        )
        texts = []
        for cand in body.get("candidates") or []:
            for part in (cand.get("content") or {}).get("parts") or []:
                blob = part.get("inlineData") or part.get("inline_data")
                if blob and blob.get("data"):
                    return _match_size(decode_image(blob["data"]), image.size, self.match_input_size)
                if part.get("text"):
                    texts.append(part["text"])
        reason = [c.get("finishReason") for c in body.get("candidates") or []] or body.get("promptFeedback")
        raise EditorError(
            f"{self.name}: no image in the response (finish: {reason}; text: {' '.join(texts)[:200]!r})"
        )


# ---------------------------------------------------------------------------------------- tool


class ToolEditor(Editor):
    """Executes canonical sub-requests exactly on synthetic scenes (`inference.scenes`): the
    verifiable editor of the CPU demo and tests. Anything it cannot execute is an error, not a guess."""

    name = "tool"
    model_id = "inference.scenes.apply_instruction"

    def __init__(self, **_: Any):
        pass

    def edit(self, image: Image.Image, instruction: str, seed: int = 0) -> Image.Image:
        from inference import scenes

        scene = scenes.scene_of(image)
        if scene is None:
            raise EditorError(
                f"tool editor: the image carries no synthetic scene ({scenes.SCENE_INFO_KEY!r} "
                "metadata); it only edits images rendered by inference.scenes"
            )
        return scenes.render_scene(scenes.apply_instruction(scene, instruction), image.width)


# ---------------------------------------------------------------------------------------- factory

EDITORS: dict[str, type[Editor]] = {
    cls.name: cls
    for cls in (FluxKontextEditor, QwenImageEditor, OpenAIImagesEditor, GeminiEditor, ToolEditor)
}


def editor_defaults(name: str) -> dict[str, Any]:
    """The configured defaults of editor `name` (from `config/editors.yaml`)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(EDITOR_CONFIG), resolve=True)
    if name not in EDITORS:
        raise ValueError(f"unknown editor {name!r}; choose one of {sorted(EDITORS)}")
    return dict(config.get(name) or {})


def make_editor(name: str, **overrides: Any) -> Editor:
    """Editor `name` with its configured defaults, any of them overridden by keyword."""
    kwargs = editor_defaults(name)
    kwargs.update(overrides)
    return EDITORS[name](**kwargs)
