"""Per-token diagnostics of a policy update: clipping, approximate KL to the old policy, masked sums."""

from __future__ import annotations

import torch


def clipped_tokens(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.28,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens whose gradient the clip removed (TRL's `clip_ratio/low` and `clip_ratio/high`):

        low  = ratio < 1 - ε_low  and A < 0
        high = ratio > 1 + ε_high and A > 0

    Shapes: ratio (B, T), advantages (B, T) or (B, 1); two (B, T) bool tensors out.
    """
    low = (ratio < 1 - epsilon_low) & (advantages < 0)
    high = (ratio > 1 + epsilon_high) & (advantages > 0)
    return low, high


def approx_kl(per_token_logps: torch.Tensor, old_per_token_logps: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(π_old || π_θ) per token, from tokens sampled by π_old (Schulman, "Approximating KL
    divergence", http://joschu.net/blog/kl-approx.html; CleanRL's `approx_kl`):

        log_ratio = log π_θ - log π_old,  kl_t = (exp(log_ratio) - 1) - log_ratio

    Shapes: (B, T) in and out; no gradient.
    """
    log_ratio = (per_token_logps - old_per_token_logps).detach()
    return torch.expm1(log_ratio) - log_ratio


def masked_sum(values: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Σ values where `loss_mask` is 1, in float32 (no gradient). Shapes: (B, T) or broadcastable, () out."""
    return torch.where(loss_mask.bool(), values.detach().to(torch.float32), 0.0).sum()


def masked_max(values: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """max values where `loss_mask` is 1 (-inf when nothing is masked in). () out."""
    return torch.where(loss_mask.bool(), values.detach().to(torch.float32), -torch.inf).max()


def masked_min(values: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """min values where `loss_mask` is 1 (+inf when nothing is masked in). () out."""
    return torch.where(loss_mask.bool(), values.detach().to(torch.float32), torch.inf).min()
