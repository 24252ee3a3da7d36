"""The GRPO policy loss: clipped surrogate, k3 KL, truncated importance sampling and the loss aggregations."""

from __future__ import annotations

from typing import NamedTuple

import torch
from agent_env.config.learner import LossAggregation, TisMode

LOSS_AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "dr_grpo")



class PolicyLoss(NamedTuple):
    """What `grpo_loss` returns: the scalar to backpropagate and the per-token terms it came from."""

    loss: torch.Tensor
    """() aggregated loss (see `aggregate_loss`)."""
    per_token_loss: torch.Tensor
    """(B, T) clipped surrogate (× importance weights) + β·KL; meaningful where `loss_mask` is 1."""
    ratio: torch.Tensor
    """(B, T) π_θ / π_old, detached."""
    per_token_kl: torch.Tensor | None
    """(B, T) k3 KL to the reference, detached; None when β = 0."""


def clipped_surrogate(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate with asymmetric clipping (DAPO's clip-higher), as a per-token loss to minimise.

        ratio         = exp(log π_θ(y_t) - log π_old(y_t))
        clipped_ratio = clip(ratio, 1 - ε_low, 1 + ε_high)
        pg_loss1      = -A · ratio
        pg_loss2      = -A · clipped_ratio
        loss_t        = max(pg_loss1, pg_loss2)

    Args:
        per_token_logps: (B, T) log π_θ, with gradient.
        old_per_token_logps: (B, T) log π_old, the policy that the advantages were computed for (no gradient).
        advantages: (B, T) or (B, 1) per-token or per-sequence advantages.

    Returns:
        per_token_loss (B, T) and ratio (B, T) (detached, for metrics).
    """
    log_ratio = per_token_logps - old_per_token_logps  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # (B, T)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * clipped_ratio
    return torch.maximum(pg_loss1, pg_loss2), ratio.detach()


def k3_kl(per_token_logps: torch.Tensor, ref_per_token_logps: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π_θ || π_ref), per token, from samples of π_θ (always ≥ 0).

        kl_t = exp(log π_ref - log π_θ) - (log π_ref - log π_θ) - 1

    Shapes: (B, T) in, (B, T) out.
    """
    log_ratio = ref_per_token_logps - per_token_logps  # (B, T)
    return torch.exp(log_ratio) - log_ratio - 1


def truncated_importance_weights(
    old_per_token_logps: torch.Tensor,
    engine_per_token_logps: torch.Tensor,
    cap: float = 2.0,
    mode: TisMode = "truncate",
    loss_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Importance weights that correct for the engine sampling from a slightly different π than the learner's.

        w_t = exp(log π_old(y_t) - log π_engine(y_t))
        truncate:  w_t = min(w_t, C)
        mask:      w_t = w_t if w_t ≤ C else 0

    Args:
        old_per_token_logps: (B, T) the learner's logprobs of the sampled tokens before this step's updates.
        engine_per_token_logps: (B, T) the logprobs the engine reported while sampling.
        cap: C, the largest weight kept.
        loss_mask: (B, T); where 0 the weight is 1 (those tokens were not sampled, the engine has no logprob).

    Returns:
        (B, T) detached weights, to multiply the per-token policy loss with.
    """
    if mode not in ("truncate", "mask"):
        raise ValueError(f"Unknown truncated importance sampling mode {mode!r}; choose 'truncate' or 'mask'.")
    log_w = (old_per_token_logps - engine_per_token_logps).detach()  # (B, T)
    if loss_mask is not None:
        log_w = torch.where(loss_mask.bool(), log_w, 0.0)
    weights = torch.exp(log_w)
    if mode == "truncate":
        return torch.clamp(weights, max=cap)
    return torch.where(weights > cap, 0.0, weights)


def aggregate_loss(
    per_token_loss: torch.Tensor,
    loss_mask: torch.Tensor,
    aggregation: LossAggregation = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_sequences: float | None = None,
    max_length: int | None = None,
) -> torch.Tensor:
    """Reduce (B, T) per-token losses to a scalar; only tokens with `loss_mask` 1 count (others get no gradient).

        token-mean:           Σ_{i,t} m·l / N_tokens
        seq-mean-token-mean:  Σ_i (Σ_t m·l / max(1, Σ_t m)) / N_sequences
        dr_grpo:              Σ_{i,t} m·l / (N_sequences · L_max)

    The denominators are arguments so that micro-batches and ranks add up to the loss of the whole optimizer
    step: pass the step's global trained-token count (`num_tokens`) or sequence count (`num_sequences`); they
    default to this batch's own counts (`loss_mask.sum()`, B).

    Args:
        per_token_loss: (B, T).
        loss_mask: (B, T) 1 on trained (sampled) tokens, 0 elsewhere.
        max_length: L_max for `dr_grpo`: a constant, the most tokens a response may have.
    """
    mask = loss_mask.bool()  # (B, T)
    masked = torch.where(mask, per_token_loss, 0.0)  # (B, T); where() so inf/nan at masked tokens stay out
    if aggregation == "token-mean":
        denominator = mask.sum() if num_tokens is None else num_tokens
        return masked.sum() / max(float(denominator), 1.0)
    sequences = per_token_loss.shape[0] if num_sequences is None else num_sequences
    if aggregation == "seq-mean-token-mean":
        per_sequence = masked.sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
        return per_sequence.sum() / max(float(sequences), 1.0)
    if aggregation == "dr_grpo":
        if max_length is None:
            raise ValueError(
                "The dr_grpo aggregation divides by a constant max length: pass max_length (the most tokens a response may have)."
            )
        return masked.sum() / (max(float(sequences), 1.0) * max_length)
    raise ValueError(
        f"Unknown loss aggregation {aggregation!r}; choose one of {', '.join(LOSS_AGGREGATIONS)}."
    )


def grpo_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
    aggregation: LossAggregation = "token-mean",
    num_tokens: float | torch.Tensor | None = None,
    num_sequences: float | None = None,
    max_length: int | None = None,
    importance_weights: torch.Tensor | None = None,
    ref_per_token_logps: torch.Tensor | None = None,
    beta: float = 0.0,
) -> PolicyLoss:
    """The GRPO objective for one batch, as a loss to minimise:

        l_t  = max(-A·ratio, -A·clip(ratio, 1-ε_low, 1+ε_high)) · w_t  +  β · kl_t
        loss = aggregate(l, mask)

    with w_t the truncated importance weights against the engine (`truncated_importance_weights`, 1 if None)
    and kl_t the k3 KL to the reference policy (`k3_kl`, only when β ≠ 0). The same order as TRL's
    `GRPOTrainer._compute_loss`: the importance weight scales the policy term, not the KL term.

    Shapes: logprobs and mask (B, T); advantages (B, T) or (B, 1); importance weights (B, T).
    Old and reference logprobs are only read where `loss_mask` is 1: whatever they hold elsewhere (padding,
    inserted tokens) cannot reach the loss or its gradient.
    """
    trained = loss_mask.bool()  # (B, T)
    old_per_token_logps = torch.where(trained, old_per_token_logps, per_token_logps.detach())
    per_token_loss, ratio = clipped_surrogate(
        per_token_logps, old_per_token_logps, advantages, epsilon_low, epsilon_high
    )
    if importance_weights is not None:
        per_token_loss = per_token_loss * importance_weights
    per_token_kl = None
    if beta != 0.0:
        if ref_per_token_logps is None:
            raise ValueError(
                f"beta = {beta} needs the reference policy's logprobs (ref_per_token_logps); set beta = 0 to train without a reference."
            )
        ref_per_token_logps = torch.where(trained, ref_per_token_logps, per_token_logps.detach())
        per_token_kl = k3_kl(per_token_logps, ref_per_token_logps)
        per_token_loss = per_token_loss + beta * per_token_kl
        per_token_kl = per_token_kl.detach()
    loss = aggregate_loss(per_token_loss, loss_mask, aggregation, num_tokens, num_sequences, max_length)
    return PolicyLoss(loss, per_token_loss, ratio, per_token_kl)
