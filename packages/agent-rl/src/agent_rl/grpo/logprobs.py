"""Per-token log-probabilities and entropies of the temperature-scaled policy, without a full log-softmax copy."""

from __future__ import annotations

import torch

DEFAULT_CHUNK_ROWS = 1024
"""Rows (token positions) processed at once: the float32 scratch is `chunk_rows × vocab` (200 MB at 49k vocab)."""


class _SelectedLogProb(torch.autograd.Function):
    """log softmax(x / T)[y] = x_y / T - logsumexp(x / T), chunked over rows; saves only `logits` and the (N,) lse.
    With `with_entropy`, the entropy of softmax(x / T) per row comes out too, from the same chunks (no gradient)."""

    @staticmethod
    def forward(
        ctx, logits: torch.Tensor, index: torch.Tensor, temperature: float, chunk_rows: int, with_entropy: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # logits (N, V), index (N,) -> logprobs (N,) float32, entropy (N,) float32 (empty without with_entropy)
        logprobs = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        lse = torch.empty_like(logprobs)
        entropy = torch.empty_like(logprobs) if with_entropy else logprobs.new_empty(0)
        for start in range(0, logits.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            scaled = _scaled(logits[rows], temperature)  # (n, V) float32
            lse[rows] = torch.logsumexp(scaled, dim=-1)
            logprobs[rows] = scaled.gather(-1, index[rows, None]).squeeze(-1) - lse[rows]
            if with_entropy:  # H = lse - Σ_v p_v x_v
                entropy[rows] = lse[rows] - (torch.softmax(scaled, dim=-1) * scaled).sum(-1)
        ctx.save_for_backward(logits, index, lse)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs: torch.Tensor, grad_entropy: torch.Tensor):
        # d logprob_y / d x_v = (1[v = y] - softmax(x / T)_v) / T
        logits, index, lse = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            probs = torch.exp(_scaled(logits[rows], ctx.temperature) - lse[rows, None])  # (n, V)
            grad = grad_logprobs[rows, None].to(torch.float32)  # (n, 1)
            chunk = (-probs * grad).scatter_add_(-1, index[rows, None], grad)
            grad_logits[rows] = (chunk / ctx.temperature if ctx.temperature != 1.0 else chunk).to(
                logits.dtype
            )
        return grad_logits, None, None, None, None


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.to(torch.float32)
    return logits / temperature if temperature != 1.0 else logits


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> torch.Tensor:
    """log π(y_t) = log softmax(logits_t / T)[y_t] for every position, differentiable with respect to `logits`.

    The logits are divided by the sampling temperature T before the softmax, so these are the logprobs of the
    distribution the engine sampled from (vLLM's `processed_logprobs`). Computed as `x_y - logsumexp(x)` in
    float32, `chunk_rows` positions at a time, and the backward recomputes the softmax from the saved logits:
    no (..., V) log-softmax is kept for backward.

    Args:
        logits: (..., V), any float dtype; pass a contiguous tensor (a non-contiguous one is copied).
        tokens: (...) the token ids whose logprobs to take.
        temperature: the sampling temperature (> 0).

    Returns:
        (...) float32 per-token logprobs.
    """
    return _selected(logits, tokens, temperature, chunk_rows, with_entropy=False)[0]


def token_logprobs_with_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logprobs` (differentiable) and the per-position entropy of softmax(logits / T) (no gradient), in
    one pass over the logits: for an update whose own forward pass is also the scoring of π_old.

    Shapes: logits (..., V), tokens (...); two (...) float32 tensors out.
    """
    return _selected(logits, tokens, temperature, chunk_rows, with_entropy=True)


def _selected(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float, chunk_rows: int, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 to score tokens (greedy decoding has no logprobs), got {temperature}."
        )
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree: expected logits (..., V), tokens (...)."
        )
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    flat_tokens = tokens.reshape(-1).to(torch.long)  # (N,)
    logprobs, entropy = _SelectedLogProb.apply(flat_logits, flat_tokens, float(temperature), chunk_rows, with_entropy)
    return logprobs.view(tokens.shape), (entropy.view(tokens.shape) if with_entropy else entropy)


@torch.no_grad()
def token_entropy(
    logits: torch.Tensor, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> torch.Tensor:
    """H_t = -Σ_v p_v log p_v with p = softmax(logits_t / T), per position, in float32 (no gradient; for metrics).

    Args:
        logits: (..., V).

    Returns:
        (...) float32 entropies in nats.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    entropy = torch.empty(flat_logits.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, flat_logits.shape[0], chunk_rows):
        scaled = _scaled(flat_logits[start : start + chunk_rows], temperature)  # (n, V)
        logp = scaled - torch.logsumexp(scaled, dim=-1, keepdim=True)
        entropy[start : start + chunk_rows] = -(logp.exp() * logp).sum(-1)
    return entropy.view(logits.shape[:-1])


@torch.no_grad()
def token_logprobs_and_entropy(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_logprobs` and `token_entropy` in one pass over the logits (no gradient: for scoring π_old).

    Shapes: logits (..., V), tokens (...); two (...) float32 tensors out.
    """
    return _selected(logits, tokens, temperature, chunk_rows, with_entropy=True)
