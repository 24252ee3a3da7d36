"""`VLLMEngine`: vLLM 0.26's `AsyncLLM` as an `InferenceEngine` (GPU; token-in/token-out, processed logprobs).

vLLM is imported when an engine is created, never at import time; without it, creating one raises an
ImportError that names the extra to install.

Weight updates. `AsyncLLM` runs the engine core (scheduler + model worker) in a child process, so the
learner's tensors cannot simply be copied into the model as with `vllm.LLM` in one process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0` only affects `LLMEngine`/`LLM`, not `AsyncLLM`). `update_weights` packs
the learner's tensors into flat GPU buckets, shares each by one CUDA IPC handle and has the worker load them with the model's own
`load_weights`, through `collective_rpc` and a worker extension (`agent_rl.engines.vllm_weight_sync`): no
copy through the socket, no pickling. That is the colocated mode (learner and engine on one GPU).
With `weight_sync="nccl"` the engine runs on GPUs of its own (`devices`) and the learner's rank 0 broadcasts
packed buckets of weights to its workers over NCCL (`agent_rl.engines.vllm_nccl`), which load them the same
way. Not used: vLLM's built-in `weight_transfer_config` backends (`"ipc"` needs `ray` and
`VLLM_ALLOW_INSECURE_SERIALIZATION=1` in 0.26; `"nccl"` is discussed in `agent_rl.engines.vllm_nccl`).
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from agent_rl.engines.base import (
    Completion,
    EngineClosedError,
    NamedTensors,
    SamplingParams,
    iter_named_tensors,
)
from agent_rl.engines.vllm_weight_sync import (
    JOIN_BROADCAST_METHOD,
    LOAD_METHOD,
    RECEIVE_BUCKET_METHOD,
    WORKER_EXTENSION,
    share_weights_in_buckets,
)
from agent_rl.engines.weight_broadcast import DEFAULT_BUCKET_BYTES, pack_buckets

if TYPE_CHECKING:
    import torch

    from agent_rl.engines.vllm_nccl import NcclWeightSender

WeightSync = Literal["ipc", "nccl", "none"]


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "VLLMEngine needs vLLM 0.26.0, which is not installed. On a GPU machine run "
            "`pip install 'agent-rl[vllm]'`; on a CPU-only machine use the HF engine (`HFEngine`)."
        ) from error
    return vllm


class VLLMEngine:
    """An `InferenceEngine` on vLLM's `AsyncLLM`, with prefix caching and `logprobs_mode="processed_logprobs"`.

    model: a model directory, hub id or `embedded:<name>`.
    weight_sync: "ipc" (default) enables `update_weights` from tensors on the engine's GPU via CUDA IPC
        (tensor_parallel_size 1); "nccl" from tensors on another GPU of this process (the learner's), broadcast
        over NCCL in buckets of `weight_bucket_bytes` (any tensor_parallel_size); "none" disables weight updates.
    devices: the GPUs the engine runs on, as indices of this process's visible GPUs (its processes are started
        seeing only those); default: the GPUs this process sees (vLLM takes the first). With "nccl",
        `tensor_parallel_size` defaults to `len(devices)`.
    enable_sleep_mode: needed for `sleep()`/`wake_up()` (colocated training).
    engine_kwargs: more `vllm.AsyncEngineArgs` fields (e.g. `tensor_parallel_size`, `max_num_seqs`).

    Every process it starts gets `NCCL_NVLS_ENABLE=0` unless the variable is set.

    Construction starts the engine core (model load, compile, CUDA graphs: tens of seconds).
    """

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
        enable_sleep_mode: bool = True,
        seed: int = 0,
        enforce_eager: bool = False,
        weight_sync: WeightSync = "ipc",
        devices: Sequence[int] | None = None,
        weight_bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        **engine_kwargs: Any,
    ) -> None:
        _import_vllm()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from agent_rl.embedded_model import resolve_model_path
        from agent_rl.engines.vllm_nccl import engine_gpus_visible

        if weight_sync not in ("ipc", "nccl", "none"):
            raise ValueError(f"weight_sync must be 'ipc', 'nccl' or 'none', got {weight_sync!r}.")
        if weight_sync == "nccl":
            engine_kwargs.setdefault("tensor_parallel_size", len(devices) if devices else 1)
            engine_kwargs.setdefault("worker_extension_cls", WORKER_EXTENSION)
        if weight_sync == "ipc":
            import torch

            if devices is not None and list(devices) != [torch.cuda.current_device()]:
                raise ValueError(
                    f"weight_sync='ipc' shares the learner's tensors on GPU {torch.cuda.current_device()}, so the engine "
                    f"must run there, not on devices={list(devices)}; use weight_sync='nccl' for an engine on other GPUs."
                )
            if engine_kwargs.get("tensor_parallel_size", 1) != 1:
                raise ValueError(
                    "weight_sync='ipc' shares the learner's tensors from one GPU, so it needs "
                    "tensor_parallel_size=1; use weight_sync='none' for a tensor-parallel engine."
                )
            engine_kwargs.setdefault("worker_extension_cls", WORKER_EXTENSION)
        path = resolve_model_path(model)
        args = AsyncEngineArgs(
            model=path,
            tokenizer=resolve_model_path(tokenizer) if tokenizer else None,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            enable_sleep_mode=enable_sleep_mode,
            seed=seed,
            enforce_eager=enforce_eager,
            **engine_kwargs,
        )
        with engine_gpus_visible(devices):
            self._llm = AsyncLLM.from_engine_args(args)
        self.max_model_len: int = self._llm.model_config.max_model_len
        self._weight_sync = weight_sync
        self._workers = int(engine_kwargs.get("tensor_parallel_size", 1)) * int(engine_kwargs.get("pipeline_parallel_size", 1))
        self._bucket_bytes = weight_bucket_bytes
        self._sender: NcclWeightSender | None = None
        self._closed = False

    async def generate(self, prompt_ids: list[int], params: SamplingParams | None = None) -> list[Completion]:
        """`params.n` completions of `prompt_ids` (see `InferenceEngine`), sorted by sample index."""
        from vllm import SamplingParams as VllmSamplingParams
        from vllm import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._check_open()
        params = params or SamplingParams()
        # vLLM matches stop strings on text it decodes token by token (and then also decodes every sampled
        # token's logprob entry); without stop strings the text is decoded once per completion here instead,
        # which keeps that per-token Python work off this process (and off a learner sharing it)
        detokenize = bool(params.stop)
        vllm_params = VllmSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            stop_token_ids=list(params.stop_token_ids) or None,
            seed=params.seed,
            ignore_eos=params.ignore_eos,
            logprobs=0 if params.logprobs else None,  # 0 = only the sampled token's logprob
            flat_logprobs=True,
            output_kind=RequestOutputKind.FINAL_ONLY,
            detokenize=detokenize,
        )
        final = None
        prompt = TokensPrompt(prompt_token_ids=[int(t) for t in prompt_ids])
        async for output in self._llm.generate(prompt, vllm_params, request_id=uuid.uuid4().hex):
            final = output
        if final is None:
            return []
        completions = [
            _completion(output, params.logprobs) for output in sorted(final.outputs, key=lambda o: o.index)
        ]
        if not detokenize:
            for completion in completions:
                completion.text = self._tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        return completions

    @functools.cached_property
    def _tokenizer(self) -> Any:
        """The engine's tokenizer (what vLLM decodes with)."""
        return self._llm.get_tokenizer()

    async def update_weights(self, weights: NamedTensors) -> None:
        """Load new weights by HF name, then reset the prefix cache. Call it with no `generate` in flight (after
        `wake_up()` in colocated mode).

        Both modes pack the tensors, cast to the engine's dtype, into flat buckets of about `weight_bucket_bytes`
        on the current GPU (the learner's). "ipc": that must be the engine's GPU; each bucket is shared with the
        worker as one CUDA IPC handle. "nccl": each bucket is broadcast to the workers; the first call first sets
        up the NCCL group with them. Each tensor is copied as soon as it is taken, so
        `Learner.named_weights()` (ZeRO-3: every rank iterates) can be passed as is.
        """
        self._check_open()
        if self._weight_sync == "nccl":
            await self._broadcast_weights(weights)
            return
        if self._weight_sync != "ipc":
            raise RuntimeError("This VLLMEngine was created with weight_sync='none'; use weight_sync='ipc' or 'nccl'.")
        dtype = self._llm.model_config.dtype
        await share_weights_in_buckets(iter_named_tensors(weights), dtype, self._bucket_bytes, self.load_shared_bucket)
        await self.reset_prefix_cache()

    @property
    def shared_bucket_spec(self) -> dict[str, Any] | None:
        """With `weight_sync="ipc"`: the dtype name and bucket size in which another process (`EngineProcess`,
        hosting this engine) packs the weights it shares through `load_shared_bucket`; else None."""
        if self._weight_sync != "ipc":
            return None
        return {"dtype": str(self._llm.model_config.dtype).removeprefix("torch."), "bucket_bytes": self._bucket_bytes}

    async def load_shared_bucket(self, layout: Any, handle: dict[str, Any]) -> None:
        """Have the worker load one packed bucket (`pack_buckets`' layout) from its CUDA IPC handle
        (`share_cuda_tensor`); it has finished reading the bucket when this returns. `reset_prefix_cache()` after
        the last bucket."""
        self._check_open()
        await self._llm.collective_rpc(LOAD_METHOD, args=(layout, handle))

    async def reset_prefix_cache(self) -> None:
        """Drop the cached prefixes (computed with the old weights)."""
        await self._llm.reset_prefix_cache()

    async def _broadcast_weights(self, weights: NamedTensors) -> None:
        import torch

        loop = asyncio.get_running_loop()
        sender = self._sender or await self._connect_sender(torch.device("cuda", torch.cuda.current_device()))
        dtype = self._llm.model_config.dtype
        dtype_name = str(dtype).removeprefix("torch.")
        for layout, flat in pack_buckets(iter_named_tensors(weights), dtype, sender.device, self._bucket_bytes):
            # the workers receive while this process sends: neither call returns before both have run
            await asyncio.gather(
                self._llm.collective_rpc(RECEIVE_BUCKET_METHOD, args=(layout, dtype_name)),
                loop.run_in_executor(None, sender.broadcast, flat),
            )
        await self._llm.reset_prefix_cache()

    async def _connect_sender(self, device: torch.device) -> NcclWeightSender:
        """Make the NCCL weight-broadcast group: this process (rank 0, on `device`) and every engine worker."""
        from agent_rl.engines.vllm_nccl import NcclWeightSender, free_port

        host, port = "127.0.0.1", free_port()
        world_size = 1 + self._workers
        loop = asyncio.get_running_loop()
        _, sender = await asyncio.gather(
            self._llm.collective_rpc(JOIN_BROADCAST_METHOD, args=(host, port, world_size)),
            loop.run_in_executor(None, NcclWeightSender.connect, host, port, world_size, device),
        )
        self._sender = sender
        return sender

    async def sleep(self, level: int = 1) -> None:
        """Free GPU memory: level 1 offloads the weights to the CPU and drops the KV cache; level 2 drops both
        (then `update_weights` must follow `wake_up`). Needs `enable_sleep_mode=True`."""
        self._check_open()
        await self._llm.sleep(level)

    async def wake_up(self) -> None:
        """Restore the weights and the KV cache memory after `sleep`."""
        self._check_open()
        await self._llm.wake_up()
        await self._llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine core down; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._llm.shutdown()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("This VLLMEngine is closed; create a new one.")


def _completion(output: Any, with_logprobs: bool) -> Completion:
    """Our `Completion` from a vLLM `CompletionOutput` (FINAL_ONLY, `logprobs=0`)."""
    token_ids = list(output.token_ids)
    logprobs: list[float] = []
    if with_logprobs and output.logprobs is not None:
        logprobs = _sampled_logprobs(output.logprobs, token_ids)
    finish_reason = output.finish_reason if output.finish_reason in ("stop", "length", "abort") else "abort"
    return Completion(
        token_ids=token_ids,
        logprobs=logprobs,
        finish_reason=finish_reason,
        text=output.text,
        stop_reason=output.stop_reason,
    )


def _sampled_logprobs(logprobs: Any, token_ids: list[int]) -> list[float]:
    """The logprob of each sampled token, from `FlatLogprobs` or from a list of `{token_id: Logprob}`."""
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs: the sampled token comes first at each position
        values = []
        for position, token in enumerate(token_ids):
            start, end = logprobs.start_indices[position], logprobs.end_indices[position]
            at = start if logprobs.token_ids[start] == token else logprobs.token_ids.index(token, start, end)
            values.append(logprobs.logprobs[at])
        return values
    return [position[token].logprob for position, token in zip(logprobs, token_ids, strict=True)]
