"""A transformers rollout for verl 0.9.1: the engine verl's agent loop samples from on a CPU.

verl knows three rollout engines (vLLM, SGLang, TensorRT-LLM; `verl/workers/rollout/base.py:88-92`,
`replica.py:388-390`), none of which runs without a GPU. This one registers under the name `hf`
in both of verl's registries and plays the same three roles as vLLM's classes:

- `HFRolloutServer`, a Ray actor holding a transformers copy of the policy: token-in/token-out
  `generate` with per-token log-probs (verl's `TokenOutput`), requests batched as they arrive;
- `HFReplica`, verl's `RolloutReplica` that launches one server per replica;
- `HFServerAdapter`, the `BaseRollout` in each hybrid FSDP worker that pushes the actor's weights
  to its server after every update (verl's "naive" checkpoint engine path).

Sampling follows the model's own processed distribution: vision special tokens are suppressed (a
sampled `<|image_pad|>` would break the trainer's next forward) and the log-probs are those of
`logits / temperature` with the same tokens masked, so they agree with the actor's recomputation.
Qwen2.5-VL's 3-D rope positions need `mm_token_type_ids` in `generate` (without them transformers
falls back to 1-D positions and the log-probs drift); the server builds them from the prompt ids.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from inference.chat_backends import VISION_TOKENS  # special tokens a response must never contain
from recipes.verl_cpu import ROLLOUT_NAME

#: How long a batch waits for more requests of the same burst before it starts (seconds).
BATCH_WINDOW_S = float(os.environ.get("VERL_CPU_ROLLOUT_BATCH_WINDOW_S", "0.02"))
#: A JSONL file: when set, every weight update appends the last sampled batch's response log-probs
#: under the weights before and after the update (what one GRPO step did to the policy the rollout
#: samples from; tests/test_verl_cpu_train.py checks its direction). Costs two forwards per step.
PROBE_ENV = "VERL_CPU_ROLLOUT_PROBE"


@dataclass
class _Request:
    prompt_ids: list[int]
    images: list[Any]
    max_tokens: int
    future: asyncio.Future
    #: the sampling settings and the image processor's kwargs: requests of one key share a batch
    key: tuple = field(default=())


def _sampling_key(params: dict[str, Any]) -> tuple[bool, float, float, int]:
    temperature = float(params.get("temperature", 1.0))
    greedy = temperature <= 0.0
    top_k = int(params.get("top_k", -1) or -1)
    return greedy, (1.0 if greedy else temperature), float(params.get("top_p", 1.0)), top_k


class HFRolloutServer:
    """Token-in/token-out generation on a transformers model (a Ray actor, one per replica)."""

    def __init__(self, config, model_config, replica_rank: int = 0) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from verl.utils.config import omega_conf_to_dataclass

        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config)
        self.replica_rank = replica_rank
        threads = int(os.environ.get("VERL_CPU_ROLLOUT_THREADS", "0")) or os.cpu_count() or 1
        torch.set_num_threads(threads)
        path = self.model_config.local_path
        attn = (self.model_config.override_config or {}).get("attn_implementation", "sdpa")
        self.model = AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch.float32, attn_implementation=attn
        ).eval()
        self.processor = AutoProcessor.from_pretrained(path)
        tokenizer = self.processor.tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
        self.suppressed = sorted({i for i in ids if i is not None and i != tokenizer.unk_token_id})
        self.image_token_id = getattr(self.model.config, "image_token_id", None)
        self._names = self._weight_names()
        self._pending: list[_Request] = []
        self._arrived = asyncio.Event()
        self._batcher: asyncio.Task | None = None
        self.global_steps: int | None = None
        self.batches = 0
        self.probe_path = os.environ.get(PROBE_ENV) or None
        #: the sampled batches since the last weight update (inputs, responses, response lengths)
        self._sampled: list[tuple[dict[str, torch.Tensor], torch.Tensor, list[int]]] = []

    # ------------------------------------------------------------------ weights
    def _weight_names(self) -> dict[str, str]:
        """Checkpoint-format names (what verl's engine sends, `convert_weight_keys`) -> module names."""
        names = {n: n for n in self.model.state_dict()}
        for name in list(names):
            for prefix, short in (("model.language_model.", "model."), ("model.visual.", "visual.")):
                if name.startswith(prefix):
                    names[short + name[len(prefix) :]] = name
        return names

    async def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> int:
        """Copy the actor's full tensors into the local model; unknown names are an error."""
        state = self.model.state_dict()
        unknown = [n for n, _ in named_tensors if n not in self._names]
        if unknown:
            raise KeyError(f"weights the rollout model does not have: {unknown[:5]} (of {len(unknown)})")
        before = [self._score(*batch) for batch in self._sampled] if self.probe_path else None
        with torch.no_grad():
            for name, tensor in named_tensors:
                state[self._names[name]].copy_(tensor.to(state[self._names[name]].dtype))
        if before:
            after = [self._score(*batch) for batch in self._sampled]
            self._write_probe(before, after)
        self._sampled = []
        return len(named_tensors)

    # ------------------------------------------------------------------ probe
    @torch.no_grad()
    def _score(
        self, inputs: dict[str, torch.Tensor], responses: torch.Tensor, lengths: list[int]
    ) -> list[float]:
        """Summed log-probs of a sampled batch's responses under the current weights."""
        width = inputs["input_ids"].shape[1]
        full = {**inputs, "input_ids": torch.cat([inputs["input_ids"], responses], dim=1)}
        response_mask = torch.zeros_like(responses)
        for row, n in enumerate(lengths):
            response_mask[row, :n] = 1
        full["attention_mask"] = torch.cat([inputs["attention_mask"], response_mask], dim=1)
        if "mm_token_type_ids" in inputs:
            full["mm_token_type_ids"] = torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(responses)], dim=1
            )
        logits = self.model(**full).logits[:, width - 1 : -1].float()
        if self.suppressed:
            logits[..., self.suppressed] = float("-inf")
        taken = torch.log_softmax(logits, dim=-1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
        return [float(taken[row, :n].sum()) for row, n in enumerate(lengths)]

    def _write_probe(self, before: list[list[float]], after: list[list[float]]) -> None:
        tokenizer = self.processor.tokenizer
        rows = [
            {
                "global_steps": self.global_steps,
                "prompt": tokenizer.decode(inputs["input_ids"][row][inputs["attention_mask"][row] == 1]),
                "response": tokenizer.decode(responses[row, :n], skip_special_tokens=True),
                "logp_before": b,
                "logp_after": a,
            }
            for (inputs, responses, lengths), bs, afs in zip(self._sampled, before, after, strict=True)
            for row, (n, b, a) in enumerate(zip(lengths, bs, afs, strict=True))
        ]
        with open(self.probe_path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------ generation
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> TokenOutput:
        if video_data or audio_data:
            raise ValueError(f"the hf CPU rollout takes images only (request {request_id} holds video/audio)")
        prompt_ids = [int(t) for t in prompt_ids]
        budget = self.config.prompt_length + self.config.response_length - len(prompt_ids)
        max_tokens = int(sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens") or 0)
        max_tokens = max(
            1, min(max_tokens or self.config.response_length, budget, self.config.response_length)
        )
        future = asyncio.get_running_loop().create_future()
        # the processor kwargs verl built the prompt's image tokens with (data.mm_processor_kwargs,
        # agent_loop.py:243-252): pixel_values must come from the same min/max_pixels
        vision_kwargs = json.dumps(mm_processor_kwargs or {}, sort_keys=True, default=str)
        request = _Request(
            prompt_ids,
            list(image_data or []),
            max_tokens,
            future,
            (*_sampling_key(sampling_params), vision_kwargs),
        )
        self._pending.append(request)
        self._arrived.set()
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.create_task(self._run_batches())
        token_ids, log_probs = await future
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    async def _run_batches(self) -> None:
        """Wait out a burst of requests, then generate each sampling group as one batch."""
        while self._pending:
            while True:  # the agent loop sends a step's requests within milliseconds of each other
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), BATCH_WINDOW_S)
                except asyncio.TimeoutError:
                    break
            batch, self._pending = self._pending, []
            groups: dict[tuple, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.key, []).append(request)
            for key, requests in groups.items():
                try:
                    results = await asyncio.to_thread(self._generate_batch, key, requests)
                except Exception as err:  # every waiting request learns why
                    for request in requests:
                        if not request.future.done():
                            request.future.set_exception(err)
                    continue
                for request, result in zip(requests, results, strict=True):
                    if not request.future.done():
                        request.future.set_result(result)

    @torch.no_grad()
    def _generate_batch(self, key: tuple, requests: list[_Request]) -> list[tuple[list[int], list[float]]]:
        from transformers import GenerationConfig

        greedy, temperature, top_p, top_k, vision_kwargs = key
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):  # left padding
            input_ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention_mask[row, width - len(request.prompt_ids) :] = 1
        inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
        images = [image for request in requests for image in request.images]
        if images:
            vision = self.processor.image_processor(
                images=images, return_tensors="pt", **json.loads(vision_kwargs)
            )
            inputs["pixel_values"] = vision["pixel_values"]
            inputs["image_grid_thw"] = vision["image_grid_thw"]
        if self.image_token_id is not None:
            inputs["mm_token_type_ids"] = (input_ids == self.image_token_id).long()
        max_new = max(r.max_tokens for r in requests)
        generation = GenerationConfig(
            do_sample=not greedy,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k if top_k > 0 else 0,
            repetition_penalty=1.0,
            max_new_tokens=max_new,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.pad_id,
            suppress_tokens=self.suppressed or None,
            output_scores=True,
            return_dict_in_generate=True,
        )
        out = self.model.generate(**inputs, generation_config=generation)
        self.batches += 1
        responses = out.sequences[:, width:]
        # scores: the processed logits each token was drawn from (temperature, suppression applied)
        logp = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1)
        taken = logp.gather(-1, responses.unsqueeze(-1)).squeeze(-1)
        results = []
        for row, request in enumerate(requests):
            ids = responses[row].tolist()
            end = len(ids)
            for i, token in enumerate(ids):
                if token in self.eos_ids:
                    end = i + 1
                    break
            end = min(end, request.max_tokens)
            results.append((ids[:end], taken[row, :end].tolist()))
        if self.probe_path and not greedy:
            self._sampled.append((inputs, responses, [len(ids) for ids, _ in results]))
        return results

    # ------------------------------------------------------------------ what verl calls on a server
    # A transformers model keeps its weights and has no KV cache between requests: nothing to free.
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        while self._pending or (self._batcher is not None and not self._batcher.done()):
            await asyncio.sleep(0.01)

    async def abort_all_requests(self, reject_request: bool = False, **kwargs: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, **kwargs: Any) -> dict[str, Any]:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self) -> None:
        return None

    resume_engine_generation = open_submission_gate = resume_generation

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    def generation_batches(self) -> int:
        """How many batched `generate` calls ran (tests check that requests were batched)."""
        return self.batches


def server_name(replica_rank: int) -> str:
    return f"{ROLLOUT_NAME}_server_{replica_rank}_0"


class HFReplica(RolloutReplica):
    """One `HFRolloutServer` per replica, on the node of the replica's first hybrid worker."""

    async def launch_servers(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = (
            await self.workers[0].__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
            if self.workers
            else ray.get_runtime_context().get_node_id()
        )
        server = (
            ray.remote(HFRolloutServer)
            .options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
                name=server_name(self.replica_rank),
                max_concurrency=self.max_concurrency,
                num_cpus=0,  # it computes while the trainer waits for it; Ray need not reserve a core
            )
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.set_global_steps.remote(None)  # returns once the model has loaded
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{ROLLOUT_NAME}-cpu-replica-{self.replica_rank}"


class HFServerAdapter(BaseRollout):
    """The hybrid worker's side: sends the FSDP actor's full weights to its replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.has_server = rank % world == 0
        self._server = None

    def _handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    async def update_weights(
        self, weights: Iterable, wire_format: str = "named_tensors", global_steps: int | None = None, **kwargs
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(f"the hf CPU rollout takes full named tensors, not {wire_format!r}")
        # every rank walks the generator: gathering a sharded tensor is a collective
        tensors = [(name, tensor.detach().to("cpu", copy=True)) for name, tensor in weights]
        if self.has_server:
            await self._handle().update_weights.remote(tensors)
            if global_steps is not None:
                await self._handle().set_global_steps.remote(global_steps)
