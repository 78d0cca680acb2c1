"""Chat backends behind `inference.chat.ChatBackend`: transformers, vLLM (offline engine) and
OpenAI-compatible HTTP (GPT-4o, Gemini's OpenAI endpoint, `vllm serve`). Build one by name::

    from inference.chat_backends import make_backend
    backend = make_backend("transformers", "outputs/tiny/vlm")                 # CPU or GPU
    backend = make_backend("vllm", "Qwen/Qwen2.5-VL-7B-Instruct")              # GPU, needs the vllm extra
    backend = make_backend("openai", "gpt-4o")                                 # key from $OPENAI_API_KEY
    backend = make_backend("gemini", "gemini-2.5-flash")                       # key from $GEMINI_API_KEY
    backend = make_backend("openai", "served", base_url="http://127.0.0.1:8000/v1", api_key_env=None)
    results = backend.chat([conversation, ...], Sampling(temperature=0, max_new_tokens=256))
    texts = [r.texts if r.ok else r.error for r in results]  # one ChatResult per conversation

Conversations are lists of HF/OpenAI content-parts messages with PIL images
(`inference.prompts.user_message`); every backend converts them to what its engine wants.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from inference.chat import ChatBackend, ChatResult, Conversation, Sampling, failed, require
from inference.http_client import RetryPolicy, api_key_from_env, data_url, post

log = logging.getLogger(__name__)

#: Qwen2.5-VL's vision special tokens: a sampled text answer must never contain them (they crash the
#: next forward), so the transformers backend suppresses them (`inference.tiny` builds them in).
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def images_of(conversation: Conversation) -> list[Any]:
    """PIL images of a conversation's content parts, in order (how Qwen processors expect them)."""
    return [
        part["image"]
        for message in conversation
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if part.get("type") == "image"
    ]


def _map_parts(conversation: Conversation, image_part) -> list[dict[str, Any]]:
    out = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            content = [image_part(p["image"]) if p.get("type") == "image" else dict(p) for p in content]
        out.append({**message, "content": content})
    return out


# ---------------------------------------------------------------------------------------- transformers


def generate_kwargs(sampling: Sampling, suppress_ids: Sequence[int] = ()) -> dict[str, Any]:
    """`model.generate` arguments for a `Sampling`: greedy at temperature 0 (then one sequence, repeated)."""
    kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens}
    if sampling.temperature > 0:
        kwargs.update(
            do_sample=True,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            num_return_sequences=sampling.n,
        )
    else:
        kwargs.update(do_sample=False, num_return_sequences=1, temperature=None, top_p=None, top_k=None)
    if suppress_ids:
        kwargs["suppress_tokens"] = list(suppress_ids)
    return kwargs


class TransformersBackend(ChatBackend):
    """A Hugging Face VLM (`AutoModelForImageTextToText` + `AutoProcessor`), batched with left padding.

    Same conversations, sampling and batch size give the same texts (the seed is set per batch).
    Vision special tokens are suppressed: a sampled one would crash the next forward pass.
    """

    def __init__(
        self,
        model: str | Path,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
        attn_implementation: str | None = None,
        generation_kwargs: dict[str, Any] | None = None,
    ):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model_id = str(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = max(1, int(batch_size))
        #: Extra `generate` arguments (e.g. repetition_penalty, min_new_tokens); Sampling wins on overlap.
        self.generation_kwargs = dict(generation_kwargs or {})
        self.processor = AutoProcessor.from_pretrained(model)
        self.processor.tokenizer.padding_side = "left"
        if attn_implementation == "flash_attention_2":
            require("flash_attn", "attn_implementation=flash_attention_2", package="flash-attn")
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        self.model = (
            AutoModelForImageTextToText.from_pretrained(model, dtype=dtype, **extra).to(self.device).eval()
        )
        vocab = self.processor.tokenizer.get_vocab()
        self.suppress_ids = [vocab[t] for t in VISION_TOKENS if t in vocab]

    def _encode(self, conversations: Sequence[Conversation]):
        texts = [
            self.processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        images = [im for c in conversations for im in images_of(c)]
        return self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        import torch

        results: list[list[str]] = []
        kwargs = {**self.generation_kwargs, **generate_kwargs(sampling, self.suppress_ids)}
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            enc = self._encode(chunk).to(self.device)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs)
            texts = self.processor.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            per = kwargs["num_return_sequences"]
            for i in range(len(chunk)):
                group = texts[i * per : (i + 1) * per]
                results.append(group if per == sampling.n else group * sampling.n)
        return results


# ---------------------------------------------------------------------------------------- image bound


def image_bound(model: str | Path) -> dict[str, int]:
    """{min_pixels, max_pixels} of a model folder's image processor ({} for a hub id or no bound).

    `make export` writes the bound training used there (recipes/image_bound.py): transformers'
    AutoProcessor and vLLM build the processor from the same files, so both apply it; the vLLM backend
    also passes it explicitly, and an OpenAI-compatible client can resize to it (`bounded_image`)."""
    import json

    folder = Path(model)
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = folder / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text())
        config = config.get(key) or {} if key else config
        size = config.get("size") or {}
        low = config.get("min_pixels", size.get("shortest_edge"))
        high = config.get("max_pixels", size.get("longest_edge"))
        if low is not None and high is not None:
            return {"min_pixels": int(low), "max_pixels": int(high)}
    return {}


def bounded_image(image: Any, bound: dict[str, int], factor: int = 28) -> Any:
    """A PIL image resized to what a Qwen-VL processor with `bound` would make of it (its smart_resize:
    sides on multiples of patch x merge, min_pixels <= area <= max_pixels); unchanged when it already is."""
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    height, width = smart_resize(image.height, image.width, factor=factor, **bound)
    if (width, height) == image.size:
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


# ---------------------------------------------------------------------------------------- vLLM


def to_vllm_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Our messages in the shape `vllm.LLM.chat` takes: PIL images as `image_pil` parts (no re-encoding)."""
    return _map_parts(conversation, lambda im: {"type": "image_pil", "image_pil": im})


def to_vllm_sampling(sampling: Sampling) -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments for a `Sampling`."""
    return {
        "n": sampling.n,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p if sampling.temperature > 0 else 1.0,
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
    }


class VLLMBackend(ChatBackend):
    """vLLM's offline engine (GPU): batched, loads an exported HF folder or a hub id.

    Not runnable on our CPU machines; the conversions it relies on are tested, the engine is not.
    """

    def __init__(
        self,
        model: str | Path,
        limit_mm_per_prompt: dict[str, int] | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int = 8192,
        seed: int = 0,
        **engine_kwargs: Any,
    ):
        vllm = require("vllm", "the vLLM backend")
        self.model_id = str(model)
        self._sampling_params = vllm.SamplingParams
        bound = image_bound(model)  # the exported folder's (training's) image bound, also explicit
        if bound and "mm_processor_kwargs" not in engine_kwargs:
            engine_kwargs["mm_processor_kwargs"] = bound
        self.llm = vllm.LLM(
            model=str(model),
            limit_mm_per_prompt=limit_mm_per_prompt or {"image": 2},
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            **engine_kwargs,
        )

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        params = self._sampling_params(**to_vllm_sampling(sampling))
        messages = [to_vllm_messages(c) for c in conversations]
        outputs = self.llm.chat(messages, params, use_tqdm=False)
        return [[o.text for o in out.outputs] for out in outputs]


# ---------------------------------------------------------------------------------------- HTTP


def to_openai_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """Our messages for a chat-completions request: images as base64 PNG data URLs."""
    return _map_parts(conversation, lambda im: {"type": "image_url", "image_url": {"url": data_url(im)}})


class OpenAIBackend(ChatBackend):
    """Any OpenAI-compatible chat-completions server, called from a bounded thread pool.

    Every conversation is its own request with its own fate: `chat` returns one `ChatResult` per
    request, so a failure costs only its own item. Timeouts and retries (408/429/5xx, malformed
    200s, dropped connections; exponential backoff, Retry-After) follow `policy`; the API key is
    read from the environment variable `api_key_env` (None: no Authorization header).
    """

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        policy: RetryPolicy = RetryPolicy(),
        send_seed: bool = True,
        extra_body: dict[str, Any] | None = None,
    ):
        import httpx

        self.model_id = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_concurrency = max(1, int(max_concurrency))
        self.policy = policy
        self.send_seed = send_seed
        self.extra_body = dict(extra_body or {})
        key = api_key_from_env(api_key_env)
        if api_key_env and not key:
            log.warning("environment variable %s is not set; calling %s without a key", api_key_env, self.url)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            headers=headers, limits=httpx.Limits(max_connections=self.max_concurrency)
        )

    #: {min_pixels, max_pixels}: images are resized to it before they are sent (`bounded_image`), for a
    #: server whose processor would otherwise see them at another resolution than training did;
    #: `vllm serve` of an exported folder applies the folder's bound itself.
    image_bound: dict[str, int] | None = None

    def payload(self, conversation: Conversation, sampling: Sampling) -> dict[str, Any]:
        if self.image_bound:
            conversation = _map_parts(
                conversation, lambda im: {"type": "image", "image": bounded_image(im, self.image_bound)}
            )
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": to_openai_messages(conversation),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "n": sampling.n,
            **self.extra_body,
        }
        if self.send_seed and sampling.seed is not None:
            body["seed"] = sampling.seed
        return body

    def _one(self, conversation: Conversation, sampling: Sampling) -> list[str]:
        body = post(self._client, self.url, self.policy, json=self.payload(conversation, sampling))
        choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
        texts = [(c.get("message") or {}).get("content") or "" for c in choices]
        if len(texts) < sampling.n:
            raise RuntimeError(f"{self.url} returned {len(texts)} choices, asked for n={sampling.n}")
        return texts[: sampling.n]

    def _result(self, conversation: Conversation, sampling: Sampling) -> ChatResult:
        try:
            return ChatResult(texts=tuple(self._one(conversation, sampling)))
        except Exception as exc:  # noqa: BLE001 - this request's failure, recorded as its result
            return failed(exc)

    def chat(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[ChatResult]:
        if len(conversations) <= 1:
            return [self._result(c, sampling) for c in conversations]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._result(c, sampling), conversations))

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        """All completions, raising the first failure (prefer `chat`, which keeps the good answers)."""
        results = self.chat(conversations, sampling)
        return [list(r.texts) if r.ok else [r.text] for r in results]

    def close(self) -> None:
        self._client.close()


# ---------------------------------------------------------------------------------------- factory

GEMINI_OPENAI_URL = "https://generativelanguage.googleapis.com/v1beta/openai"
BACKENDS = {
    "transformers": TransformersBackend,
    "vllm": VLLMBackend,
    "openai": OpenAIBackend,
    "gemini": lambda model, **kw: OpenAIBackend(
        model, **{"base_url": GEMINI_OPENAI_URL, "api_key_env": "GEMINI_API_KEY", **kw}
    ),
}


def make_backend(kind: str, model: str | Path, **kwargs: Any) -> ChatBackend:
    """A chat backend by name: `transformers`, `vllm`, `openai` (any compatible server via `base_url`)
    or `gemini` (Gemini's OpenAI-compatible endpoint). Extra keywords go to the backend's constructor, but
    `image_bound` ({min_pixels, max_pixels}, e.g. `image_bound(exported_folder)`), which an OpenAI-compatible
    backend resizes images to (transformers and vLLM read it from the model folder)."""
    try:
        factory = BACKENDS[kind]
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}; choose one of {sorted(BACKENDS)}") from None
    bound = kwargs.pop("image_bound", None)  # OpenAI-compatible: resize images to training's bound
    if bound and kind not in ("openai", "gemini"):
        raise ValueError(f"image_bound is for OpenAI-compatible backends; {kind} reads the model folder's")
    backend = factory(str(model), **kwargs)
    if bound:
        backend.image_bound = dict(bound)
    return backend
