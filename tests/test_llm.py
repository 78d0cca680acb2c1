"""Chat backends: transformers (tiny Qwen2.5-VL), vLLM conversions, OpenAI-compatible HTTP against a
real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import threading

import pytest
from local_server import LocalServer
from PIL import Image

from inference.chat import ChatBackend, ChatError, MissingExtraError, Sampling
from inference.chat_backends import (
    OpenAIBackend,
    generate_kwargs,
    images_of,
    make_backend,
    to_openai_messages,
    to_vllm_messages,
    to_vllm_sampling,
)
from inference.http_client import RetryPolicy, retryable_status
from inference.prompts import decomposition_prompt, user_message

FAST = RetryPolicy(timeout_s=2.0, max_retries=3, backoff_s=0.01, max_backoff_s=0.05)


def _conv(text: str = "make the sky blue", size=(64, 48), colour="red"):
    return user_message(decomposition_prompt(text), [Image.new("RGB", size, colour)])


# ------------------------------------------------------------------------------ transformers


@pytest.fixture(scope="module")
def hf_backend(tiny_vlm_dir):
    return make_backend("transformers", tiny_vlm_dir, batch_size=4)


def test_generate_kwargs_greedy_and_sampled():
    greedy = generate_kwargs(Sampling(temperature=0.0, n=3, max_new_tokens=7), [5, 6])
    assert greedy["do_sample"] is False and greedy["num_return_sequences"] == 1
    assert greedy["max_new_tokens"] == 7 and greedy["suppress_tokens"] == [5, 6]
    sampled = generate_kwargs(Sampling(temperature=0.8, top_p=0.9, n=3))
    assert sampled["do_sample"] and sampled["temperature"] == 0.8 and sampled["top_p"] == 0.9
    assert sampled["num_return_sequences"] == 3 and "suppress_tokens" not in sampled


def test_transformers_batched_equals_one_by_one_greedy(hf_backend):
    convs = [_conv("make it red", (64, 48)), _conv("remove the big blue circle please", (80, 64), "blue")]
    sampling = Sampling(temperature=0.0, max_new_tokens=12)
    batched = hf_backend.generate(convs, sampling)
    single = [hf_backend.generate([c], sampling)[0] for c in convs]
    assert batched == single
    assert all(len(texts) == 1 for texts in batched)


def test_transformers_chat_returns_one_result_per_item_and_isolates_a_bad_one(hf_backend):
    strip = user_message(decomposition_prompt("x"), [Image.new("RGB", (4000, 8))])  # processor refuses it
    results = hf_backend.chat([_conv("a"), strip, _conv("b")], Sampling(max_new_tokens=4))
    assert [r.ok for r in results] == [True, False, True]
    assert "aspect ratio" in results[1].error and results[1].retryable is False
    assert results[0].texts == tuple(hf_backend.generate([_conv("a")], Sampling(max_new_tokens=4))[0])


def test_transformers_sampling_is_seeded_and_returns_n(hf_backend):
    convs = [_conv("a"), _conv("b", (56, 56))]
    s = Sampling(temperature=1.0, max_new_tokens=10, n=3, seed=7)
    first, again = hf_backend.generate(convs, s), hf_backend.generate(convs, s)
    assert first == again
    assert [len(t) for t in first] == [3, 3]
    other = hf_backend.generate(convs, Sampling(temperature=1.0, max_new_tokens=10, n=3, seed=8))
    assert other != first


def test_transformers_greedy_n_repeats(hf_backend):
    texts = hf_backend.generate([_conv()], Sampling(temperature=0.0, max_new_tokens=5, n=2))[0]
    assert len(texts) == 2 and texts[0] == texts[1]


def test_transformers_suppresses_vision_tokens(hf_backend):
    from inference.chat_backends import VISION_TOKENS

    vocab = hf_backend.processor.tokenizer.get_vocab()
    assert sorted(hf_backend.suppress_ids) == sorted(vocab[t] for t in VISION_TOKENS)
    texts = hf_backend.generate([_conv()], Sampling(temperature=1.5, max_new_tokens=40, n=4, seed=1))[0]
    assert not any(t in x for x in texts for t in VISION_TOKENS)


def test_make_backend_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown backend kind 'nope'"):
        make_backend("nope", "m")


# ------------------------------------------------------------------------------ vLLM


def test_vllm_backend_is_a_clear_missing_extra_error():
    try:  # vllm is a GPU extra: absent on the CPU machines
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(
        MissingExtraError, match=r"vLLM backend needs the optional package 'vllm'.*requirements-gpu.txt"
    ):
        make_backend("vllm", "Qwen/Qwen2.5-VL-7B-Instruct")


def test_flash_attention_without_the_extra_is_a_clear_error(tiny_vlm_dir):
    try:
        import flash_attn  # noqa: F401

        pytest.skip("flash-attn is installed here")
    except ImportError:
        pass
    with pytest.raises(MissingExtraError, match="flash_attention_2 needs the optional package 'flash-attn'"):
        make_backend("transformers", tiny_vlm_dir, attn_implementation="flash_attention_2")


def test_vllm_message_and_sampling_conversion():
    image = Image.new("RGB", (8, 8))
    conv = user_message("hello", [image])
    msgs = to_vllm_messages(conv)
    assert msgs == [
        {
            "role": "user",
            "content": [{"type": "image_pil", "image_pil": image}, {"type": "text", "text": "hello"}],
        }
    ]
    assert conv[0]["content"][0]["type"] == "image"  # the input is not modified
    assert to_vllm_sampling(Sampling(temperature=0.0, top_p=0.5, max_new_tokens=9, n=2, seed=3)) == {
        "n": 2,
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 9,
        "seed": 3,
    }


def test_images_of_and_openai_messages_encode_images():
    image = Image.new("RGB", (8, 6), "blue")
    conv = [{"role": "system", "content": "be brief"}, *user_message("hi", [image])]
    assert images_of(conv) == [image]
    msgs = to_openai_messages(conv)
    assert msgs[0] == {"role": "system", "content": "be brief"}
    url = msgs[1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (8, 6) and decoded.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


# ------------------------------------------------------------------------------ OpenAI-compatible HTTP


def _completion(texts):
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
            for i, t in enumerate(texts)
        ],
    }


def test_openai_backend_speaks_chat_completions(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret-123")

    def respond(req):
        body = json.loads(req["body"])
        user = body["messages"][0]["content"]
        text = user[-1]["text"]
        return 200, {}, _completion([f"{text}#{k}" for k in range(body["n"])])

    with LocalServer(respond) as server:
        backend = make_backend(
            "openai", "served-model", base_url=server.url + "/v1", api_key_env="TEST_LLM_KEY", policy=FAST
        )
        convs = [user_message(f"q{i}", [Image.new("RGB", (8, 8))]) for i in range(5)]
        out = backend.chat(convs, Sampling(temperature=0.3, top_p=0.9, max_new_tokens=17, n=2, seed=11))
    assert [r.texts for r in out] == [(f"q{i}#0", f"q{i}#1") for i in range(5)]
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == "Bearer sk-secret-123"
    body = json.loads(req["body"])
    assert body["model"] == "served-model" and body["n"] == 2 and body["seed"] == 11
    assert body["max_tokens"] == 17 and body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_backend_bounds_concurrency():
    overlapped = threading.Event()  # set once two requests are in flight at the same time

    def respond(req):
        if server.active >= 2:
            overlapped.set()
        overlapped.wait(timeout=30)  # hold each request until the client has sent a second one
        return 200, {}, _completion(["ok"])

    with LocalServer(respond) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key_env=None, max_concurrency=3, policy=FAST)
        out = backend.chat([user_message(str(i)) for i in range(9)], Sampling())
    assert [r.texts for r in out] == [("ok",)] * 9
    assert 2 <= server.max_active <= 3
    assert "authorization" not in server.requests[0]["headers"]


def test_openai_backend_retries_429_5xx_and_timeouts():
    attempts = {"n": 0}
    lock = threading.Lock()
    done = threading.Event()

    def respond(req):
        with lock:
            attempts["n"] += 1
            n = attempts["n"]
        if n == 1:
            return 429, {"Retry-After": "0"}, {"error": {"message": "slow down"}}
        if n == 2:
            return 503, {}, "overloaded"
        if n == 3:
            done.wait(timeout=30)  # answers only after the client has given up on it
            return 200, {}, _completion(["late"])
        return 200, {}, _completion(["finally"])

    policy = RetryPolicy(timeout_s=1.0, max_retries=6, backoff_s=0.01, max_backoff_s=0.05)
    with LocalServer(respond) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key_env=None, policy=policy)
        assert backend.chat_one(user_message("x")) == "finally"
        done.set()
    assert attempts["n"] >= 4  # 429, 503, timeout, then success (more only if a loaded CPU is slow)


def test_openai_backend_fails_fast_on_4xx_without_leaking_the_key(monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-never-print-me")

    def respond(req):
        return 400, {}, {"error": {"message": "bad model name"}}

    with LocalServer(respond) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key_env="TEST_LLM_KEY", policy=FAST)
        with pytest.raises(ChatError, match="HTTP 400.*bad model name") as info:
            backend.chat_one(user_message("x"))
    assert len(server.requests) == 1 and info.value.retryable is False
    assert "sk-never-print-me" not in str(info.value)


def test_openai_backend_gives_up_after_bounded_retries():
    with LocalServer(lambda req: (500, {}, "boom")) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key_env=None, policy=FAST)
        with pytest.raises(ChatError, match="after 4 attempts: HTTP 500") as info:
            backend.chat_one(user_message("x"))
    assert len(server.requests) == 4 and info.value.retryable is True


def test_retryable_statuses():
    assert [s for s in (400, 401, 403, 404, 408, 409, 422, 425, 429) if retryable_status(s)] == [408, 429]
    assert all(retryable_status(s) for s in (500, 502, 503, 504, 529)) and not retryable_status(501)


def test_openai_backend_keeps_every_good_answer_of_a_batch():
    """One request of a batch refused for good, one malformed once: the rest are answered once each."""
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def respond(req):
        text = json.loads(req["body"])["messages"][0]["content"][-1]["text"]
        with lock:
            seen[text] = seen.get(text, 0) + 1
            count = seen[text]
        if text == "bad":
            return 400, {}, {"error": {"message": "no"}}
        if text == "garbled" and count == 1:
            return 200, {"Content-Type": "application/json"}, b'{"choices": [{"mess'
        return 200, {}, _completion([text.upper()])

    with LocalServer(respond) as server:
        backend = OpenAIBackend("m", base_url=server.url, api_key_env=None, policy=FAST)
        results = backend.chat([user_message(t) for t in ("a", "bad", "garbled", "b")], Sampling())
    assert [r.texts for r in results] == [("A",), (), ("GARBLED",), ("B",)]
    assert not results[1].ok and results[1].retryable is False and "HTTP 400" in results[1].error
    assert seen == {"a": 1, "bad": 1, "garbled": 2, "b": 1}


def test_a_failing_engine_batch_falls_back_to_per_item_results():
    class Engine(ChatBackend):
        def __init__(self):
            self.batches = []

        def generate(self, conversations, sampling):
            texts = [c[0]["content"][-1]["text"] for c in conversations]
            self.batches.append(texts)
            if "poison" in texts:
                raise ValueError("cannot take poison")
            return [[t] * sampling.n for t in texts]

    engine = Engine()
    results = engine.chat([user_message(t) for t in ("a", "poison", "c")], Sampling(n=2))
    assert [r.texts for r in results] == [("a", "a"), (), ("c", "c")]
    assert "ValueError: cannot take poison" in results[1].error and not results[1].retryable
    assert engine.batches == [["a", "poison", "c"], ["a"], ["poison"], ["c"]]
    with pytest.raises(ChatError, match="poison"):
        engine.chat_one(user_message("poison"))
