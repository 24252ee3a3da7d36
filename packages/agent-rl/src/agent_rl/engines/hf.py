"""`HFEngine`: the `transformers` inference engine (CPU or GPU), batched, with exact per-token logprobs.

Requests that arrive within `batch_window_s` of each other (and those that queue while a batch runs) are
decoded together in one left-padded batch with a KV cache, by a sampling loop of its own rather than
`model.generate`, so that every row keeps its own sampling parameters, seed and stop conditions, and the
returned logprobs are exactly those of the distribution each token was drawn from (`processed_logprobs`).
The model runs in one worker thread, so the event loop stays free for the environments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from agent_rl.engines.base import (
    Completion,
    EngineClosedError,
    FinishReason,
    NamedTensors,
    SamplingParams,
    iter_named_tensors,
)
from agent_rl.engines.sampling import processed_logprobs, sample_from_logprobs
from agent_rl.precision import default_dtype

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_PRUNE_FRACTION = 0.25
"""Drop finished rows from the batch (a KV-cache copy) once this fraction of the running rows is done."""


@dataclass
class _Request:
    prompt_ids: list[int]
    params: SamplingParams
    future: asyncio.Future
    aborted: bool = False


@dataclass
class _Row:
    """One completion being decoded."""

    request: _Request
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None


class HFEngine:
    """An `InferenceEngine` on a Hugging Face causal LM.

    model: a model directory, hub id or `embedded:<name>` (see `agent_rl.embedded_model`), or a loaded
        `PreTrainedModel` (used on its own device and dtype; it is put in eval mode only while a batch runs,
        and its `requires_grad` is left alone, so a learner can share it).
    tokenizer: needed for stop strings and `Completion.text`; loaded from `model` when that is a path.
    device: default "cuda" when available, else "cpu" (ignored for a loaded model).
    dtype: default bfloat16 where the device multiplies it natively (a GPU; a CPU with AMX-BF16 or AVX512-BF16),
        else float32 (`agent_rl.precision.default_dtype`; ignored for a loaded model).
    max_batch_size: the most rows (completions) decoded together; a request with a larger `n` runs alone.
    batch_window_s: how long the first request of an idle engine waits for others to batch with.
    max_model_len: the most tokens per sequence; default the model's `max_position_embeddings`.
    seed: seeds the sampler of requests without their own seed (default: nondeterministic).

    Requests should come from one event loop at a time. `sleep()` on a GPU moves the weights to the CPU.
    """

    def __init__(
        self,
        model: str | PreTrainedModel,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_batch_size: int = 64,
        batch_window_s: float = 0.005,
        max_model_len: int | None = None,
        seed: int | None = None,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agent_rl.embedded_model import resolve_model_path

        if isinstance(model, str):
            path = resolve_model_path(model)
            target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            if dtype is None:
                dtype = default_dtype(target)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(target)
            model.requires_grad_(False)
            if tokenizer is None:
                tokenizer = path
        if isinstance(tokenizer, str):
            tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer))
        self.model = model
        self.tokenizer = tokenizer
        self._vocab_size = model.get_input_embeddings().num_embeddings
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        config = model.config
        self.max_model_len = int(max_model_len or getattr(config, "max_position_embeddings", 2048))
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        pad = getattr(model.generation_config, "pad_token_id", None)
        self._pad_id = int(pad if pad is not None else next(iter(self.eos_token_ids), 0))
        self._generator = torch.Generator(device=self.device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self._queue: list[_Request] = []
        self._scheduler: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="agent-rl-hf"
        )
        self._closed = False
        self._asleep = False

    # ------------------------------------------------------------------ public API

    async def generate(self, prompt_ids: list[int], params: SamplingParams | None = None) -> list[Completion]:
        """`params.n` completions of `prompt_ids` (see `InferenceEngine`). Cancelling the call aborts its rows."""
        params = params or SamplingParams()
        self._check_usable()
        prompt = [int(t) for t in prompt_ids]
        if not prompt:
            raise ValueError("generate needs a non-empty prompt_ids list.")
        if min(prompt) < 0 or max(prompt) >= self._vocab_size:
            bad = next(t for t in prompt if not 0 <= t < self._vocab_size)
            raise ValueError(f"Token id {bad} is outside the model's vocabulary (0..{self._vocab_size - 1}).")
        if len(prompt) >= self.max_model_len:
            raise ValueError(
                f"The prompt has {len(prompt)} tokens but max_model_len is {self.max_model_len}: no room to "
                "generate. Shorten the prompt or raise max_model_len."
            )
        if params.stop and self.tokenizer is None:
            raise ValueError(
                "Stop strings need a tokenizer: pass `tokenizer=` to HFEngine, or use stop_token_ids."
            )
        loop = asyncio.get_running_loop()
        request = _Request(prompt, params, loop.create_future())
        request.future.add_done_callback(lambda future: setattr(request, "aborted", future.cancelled()))
        self._queue.append(request)
        if self._scheduler is None or self._scheduler.done() or self._scheduler.get_loop() is not loop:
            self._scheduler = loop.create_task(self._schedule())
        return await request.future

    async def update_weights(self, weights: NamedTensors) -> None:
        """Copy tensors into the model's parameters/buffers by name (between batches, in the model thread)."""
        self._check_open()
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load_weights, weights)

    async def sleep(self, level: int = 1) -> None:
        """Stop serving; on a GPU, move the weights to the CPU and free the cached memory."""
        self._check_open()
        if not self._asleep and self.device.type != "cpu":
            await asyncio.get_running_loop().run_in_executor(self._executor, self._move, torch.device("cpu"))
        self._asleep = True

    async def wake_up(self) -> None:
        """Serve again, with the weights back on the engine's device."""
        self._check_open()
        if self._asleep and self.device.type != "cpu":
            await asyncio.get_running_loop().run_in_executor(self._executor, self._move, self.device)
        self._asleep = False

    def close(self) -> None:
        """Abort running rows, fail queued requests with `EngineClosedError`; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        queued, self._queue = self._queue, []
        for request in queued:
            _fail_threadsafe(
                request.future, EngineClosedError("The HFEngine was closed before this request ran.")
            )
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ scheduling (event-loop side)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and not self._closed:
            await asyncio.sleep(self.batch_window_s)
            batch = self._take_batch()
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._generate_batch, batch)
            except Exception as error:  # e.g. out of memory: every request of the batch gets the error
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(error)
                continue
            for request, completions in zip(batch, results, strict=True):
                if not request.future.done():
                    request.future.set_result(completions)

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        rows = 0
        while self._queue:
            request = self._queue[0]
            if request.future.done():  # cancelled while queued
                self._queue.pop(0)
                continue
            if batch and rows + request.params.n > self.max_batch_size:
                break
            batch.append(self._queue.pop(0))
            rows += request.params.n
        return batch

    # ------------------------------------------------------------------ decoding (model thread)

    @torch.inference_mode()
    def _generate_batch(self, requests: list[_Request]) -> list[list[Completion]]:
        rows = [
            _Row(r, _row_generator(r.params.seed, i, self.device))
            for r in requests
            for i in range(r.params.n)
        ]
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; a model shared with a learner gets its mode back
        try:
            with _eager_if_compiled(self.model):
                self._decode(requests, rows)
        finally:
            self.model.train(was_training)
        results: list[list[Completion]] = [[] for _ in requests]
        index = {id(request): i for i, request in enumerate(requests)}
        for row in rows:
            results[index[id(row.request)]].append(self._completion(row))
        return results

    def _decode(self, requests: list[_Request], rows: list[_Row]) -> None:
        """Prefill each distinct prompt once, then sample all rows step by step until each one stops."""
        device = self.device
        prompt_len = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.full((len(requests), prompt_len), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(requests), prompt_len), dtype=torch.long)
        for i, request in enumerate(requests):  # left padding: every prompt ends at the last column
            input_ids[i, prompt_len - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention[i, prompt_len - len(request.prompt_ids) :] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)

        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        # Expand the distinct prompts to one row per completion (n > 1 shares its prefill).
        request_index = {id(r): i for i, r in enumerate(requests)}
        expand = torch.tensor([request_index[id(row.request)] for row in rows], device=device)
        if len(rows) != len(requests):
            cache.batch_select_indices(expand)
        logits, attention, next_position = logits[expand], attention[expand], positions[expand, -1] + 1

        batch = list(range(len(rows)))  # row index of each batch slot
        while True:
            params = [rows[i].request.params for i in batch]
            logprobs = processed_logprobs(
                logits,
                torch.tensor([p.temperature for p in params]),
                torch.tensor([p.top_k for p in params]),
                torch.tensor([p.top_p for p in params]),
            )  # (A, V)
            tokens = self._sample(logprobs, [rows[i] for i in batch])
            token_logprobs = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1).tolist()
            for slot, (token, logprob) in enumerate(zip(tokens.tolist(), token_logprobs, strict=True)):
                row = rows[batch[slot]]
                if row.finish_reason is None:
                    row.token_ids.append(token)
                    row.logprobs.append(logprob)
                    self._check_stop(row)
            for i in batch:
                if rows[i].finish_reason is None and (rows[i].request.aborted or self._closed):
                    rows[i].finish_reason = "abort"
            running = [slot for slot, i in enumerate(batch) if rows[i].finish_reason is None]
            if not running:
                return
            if len(batch) - len(running) >= _PRUNE_FRACTION * len(batch):
                keep = torch.tensor(running, device=device)
                cache.batch_select_indices(keep)
                attention, next_position, tokens = attention[keep], next_position[keep], tokens[keep]
                batch = [batch[slot] for slot in running]
            attention = torch.cat([attention, attention.new_ones((len(batch), 1))], dim=1)
            logits = self.model(
                input_ids=tokens.unsqueeze(1),
                attention_mask=attention,
                position_ids=next_position.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1, :]
            next_position = next_position + 1

    def _sample(self, logprobs: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """One token per row: argmax for greedy rows, else a draw from exp(logprobs) at a uniform number taken
        from the row's own generator (a seeded request) or the engine's (`sample_from_logprobs`)."""
        greedy = torch.tensor([row.request.params.is_greedy for row in rows], device=logprobs.device)
        tokens = logprobs.argmax(dim=-1)
        if bool(greedy.all()):
            return tokens
        uniforms = torch.rand(len(rows), generator=self._generator, device=logprobs.device)
        for slot, row in enumerate(rows):
            if row.generator is not None:
                uniforms[slot] = torch.rand((), generator=row.generator, device=logprobs.device)
        drawn = sample_from_logprobs(logprobs, uniforms)
        return torch.where(greedy, tokens, drawn)

    def _check_stop(self, row: _Row) -> None:
        params = row.request.params
        token = row.token_ids[-1]
        if token in params.stop_token_ids:
            row.finish_reason, row.stop_reason = "stop", token
        elif not params.ignore_eos and token in self.eos_token_ids:
            row.finish_reason = "stop"
        elif params.stop and (found := self._stop_string_in_tail(row)) is not None:
            row.finish_reason, row.stop_reason = "stop", found
        elif len(row.token_ids) >= params.max_tokens or (
            len(row.request.prompt_ids) + len(row.token_ids) >= self.max_model_len
        ):
            row.finish_reason = "length"

    def _stop_string_in_tail(self, row: _Row) -> str | None:
        """A stop string in the text of the last few tokens (enough tokens to hold the longest stop string)."""
        stops = row.request.params.stop
        window = 2 * max(len(s) for s in stops) + 4
        tail = self.tokenizer.decode(row.token_ids[-window:], skip_special_tokens=True)
        return next((s for s in stops if s in tail), None)

    def _completion(self, row: _Row) -> Completion:
        text = ""
        if self.tokenizer is not None:
            text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
            if isinstance(row.stop_reason, str):
                cuts = [text.find(s) for s in row.request.params.stop if s in text]
                if cuts:
                    text = text[: min(cuts)]
        return Completion(
            token_ids=row.token_ids,
            logprobs=row.logprobs if row.request.params.logprobs else [],
            finish_reason=row.finish_reason or "abort",
            text=text,
            stop_reason=row.stop_reason,
        )

    # ------------------------------------------------------------------ weights and memory (model thread)

    def _load_weights(self, weights: NamedTensors) -> None:
        targets = self.model.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, tensor in iter_named_tensors(weights):
                target = targets.get(name)
                if target is None:
                    raise KeyError(
                        f"update_weights got {name!r}, which the engine's model does not have (it has e.g. "
                        f"{list(targets)[:3]}); pass Hugging Face parameter names of the same architecture."
                    )
                if target.shape != tensor.shape:
                    raise ValueError(
                        f"update_weights got {name!r} with shape {tuple(tensor.shape)}, but the engine's "
                        f"parameter has shape {tuple(target.shape)}."
                    )
                target.data.copy_(tensor)

    def _move(self, device: torch.device) -> None:
        self.model.to(device)
        if device.type == "cpu" and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("This HFEngine is closed; create a new one.")

    def _check_usable(self) -> None:
        self._check_open()
        if self._asleep:
            raise RuntimeError("The HFEngine is asleep (after sleep()); call `await engine.wake_up()` first.")


def _eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The ids that end a sequence: the generation config's EOS ids, else the model config's, else the tokenizer's."""
    for source in (model.generation_config, model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is not None:
            return frozenset([value] if isinstance(value, int) else value)
    return frozenset()


def _eager_if_compiled(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Decode eagerly where the model has compiled submodules (a learner's `torch_compile` layers it shares):
    every decode step has another cache length, and compiling for each would hit dynamo's recompile limit. The
    stance is process-wide, so it is taken only when needed."""
    if any(getattr(module, "_compiled_call_impl", None) is not None for module in model.modules()):
        return torch.compiler.set_stance("force_eager")
    return contextlib.nullcontext()


def _row_generator(seed: int | None, index: int, device: torch.device) -> torch.Generator | None:
    """A generator of its own for sample `index` of a seeded request (same seed -> same samples)."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if index == 0 else hash((seed, index)) & 0x7FFF_FFFF_FFFF_FFFF)
    return generator


def _fail_threadsafe(future: asyncio.Future, error: BaseException) -> None:
    def fail() -> None:
        if not future.done():
            future.set_exception(error)

    try:
        future.get_loop().call_soon_threadsafe(fail)
    except RuntimeError:  # its loop is closed: nobody is waiting any more
        pass
