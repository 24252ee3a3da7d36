"""The `InferenceEngine` protocol and its data types: token-in/token-out sampling with exact logprobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

FinishReason = Literal["stop", "length", "abort"]
"""Why a completion ended: `stop` = an end-of-sequence token, a stop token id or a stop string;
`length` = `max_tokens` or the engine's `max_model_len`; `abort` = cancelled or the engine closed."""

GREEDY_TEMPERATURE = 1e-5
"""Temperatures below this mean greedy decoding (the threshold vLLM uses)."""

NamedTensors = Iterable[tuple[str, "torch.Tensor"]] | Mapping[str, "torch.Tensor"]
"""Weights for `update_weights`: `(name, tensor)` pairs or a state dict, with Hugging Face parameter names."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one prompt's completions. Field names and meanings follow `vllm.SamplingParams`.

    temperature: 0 means greedy (then `n` must be 1, and `top_k`/`top_p` are ignored).
    top_p: nucleus filtering in (0, 1]; 1 disables it.
    top_k: keep the k most likely tokens (ties at the k-th value kept); 0 or -1 disables it.
    max_tokens: the most tokens to generate per completion.
    n: number of independent completions of the prompt.
    stop: strings that end a completion; the returned `text` stops before the first one, while
        `token_ids` keep every sampled token up to the one that completed the string.
    stop_token_ids: token ids that end a completion (kept in `token_ids`), besides the model's EOS ids.
    seed: makes this request's samples reproducible, independently of other requests.
    ignore_eos: keep generating after the model's EOS ids (`stop_token_ids` still stop).
    logprobs: return the logprob of each sampled token (see `Completion.logprobs`).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False
    logprobs: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be 0 or -1 (disabled) or at least 1, got {self.top_k}.")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.is_greedy and self.n > 1:
            raise ValueError(
                f"n={self.n} with temperature={self.temperature} (greedy) would give {self.n} identical "
                "completions; set temperature > 0 to sample, or n=1."
            )
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty.")

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE


@dataclass
class Completion:
    """One sampled completion, exactly as the engine produced it.

    token_ids: every sampled token, in order, including the EOS / stop token that ended it (never
        re-tokenized from text).
    logprobs: for each token in `token_ids`, its log-probability under the distribution it was sampled
        from: `log_softmax` of the logits divided by the temperature, after top-k/top-p filtering (vLLM's
        `processed_logprobs`). For greedy decoding (temperature 0) it is `log_softmax` of the raw logits.
        Empty when the request set `logprobs=False`.
    finish_reason: see `FinishReason`.
    text: the decoded completion without special tokens, cut before a matched stop string.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    text: str = ""
    stop_reason: int | str | None = field(default=None)
    """The stop token id or stop string that ended the completion; None for EOS, length or abort."""


@runtime_checkable
class InferenceEngine(Protocol):
    """Async token-in/token-out generation with per-token logprobs, weight updates and sleep/wake.

    Contract:
      - `generate(prompt_ids, params)` returns `params.n` completions of that prompt. The prompt is used
        as given (no chat template, no BOS added); concurrent calls are batched by the engine.
      - `update_weights(weights)` loads new weights by Hugging Face parameter name; later `generate` calls
        use them (any prefix cache is reset). Call it when no `generate` call is in flight.
      - `sleep(level)` frees accelerator memory while a colocated learner trains; `wake_up()` restores it.
        Both are no-ops where the engine has nothing to free. `generate` must not be called while asleep.
      - `close()` releases everything; pending calls end with an error; safe to call twice.
      - `max_model_len` is the most tokens (prompt + completion) a sequence may hold.
    """

    max_model_len: int

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[Completion]: ...

    async def update_weights(self, weights: NamedTensors) -> None: ...

    async def sleep(self, level: int = 1) -> None: ...

    async def wake_up(self) -> None: ...

    def close(self) -> None: ...


class EngineClosedError(RuntimeError):
    """The engine was closed while a request was pending or after it was closed."""


def iter_named_tensors(weights: NamedTensors) -> Iterable[tuple[str, torch.Tensor]]:
    """`(name, tensor)` pairs from a state dict or from an iterable of pairs."""
    if isinstance(weights, Mapping):
        return weights.items()
    return weights
