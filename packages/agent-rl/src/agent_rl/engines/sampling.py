"""Logit processing shared by the HF engine and the learner: temperature, top-k, top-p, then log-softmax."""

from __future__ import annotations

import torch

from agent_rl.engines.base import GREEDY_TEMPERATURE


def processed_logprobs(
    logits: torch.Tensor,
    temperature: torch.Tensor | float = 1.0,
    top_k: torch.Tensor | int = 0,
    top_p: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """Log-probabilities of the distribution that tokens are sampled from (vLLM's `processed_logprobs`).

    logits: (B, V). temperature, top_k, top_p: scalars or (B,) tensors, one value per row.
    Steps, per row: divide by the temperature (rows with temperature < 1e-5 are greedy: kept unscaled and
    unfiltered); keep the `top_k` largest logits (0 = all; ties with the k-th value are kept); keep the
    smallest set of the most likely tokens whose probability reaches `top_p` (1 = all); `log_softmax` in
    float32. Filtered-out tokens get -inf. Returns (B, V) float32.
    """
    logits = logits.float()
    batch, vocab = logits.shape
    device = logits.device
    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=device).expand(batch)
    top_k = torch.as_tensor(top_k, dtype=torch.long, device=device).expand(batch)
    top_p = torch.as_tensor(top_p, dtype=torch.float32, device=device).expand(batch)

    greedy = temperature < GREEDY_TEMPERATURE
    scaled = logits / torch.where(greedy, torch.ones_like(temperature), temperature).unsqueeze(1)
    use_top_k = (top_k > 0) & (top_k < vocab) & ~greedy
    use_top_p = (top_p < 1.0) & ~greedy
    if bool(use_top_k.any()) or bool(use_top_p.any()):
        scaled = _filter_top_k_top_p(scaled, top_k, top_p, use_top_k, use_top_p)
    return scaled.log_softmax(dim=-1)


def _filter_top_k_top_p(
    scaled: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    use_top_k: torch.Tensor,
    use_top_p: torch.Tensor,
) -> torch.Tensor:
    """Set to -inf the logits outside each row's top-k, then outside its top-p nucleus."""
    vocab = scaled.shape[1]
    ascending, order = scaled.sort(dim=-1)  # (B, V), least likely first
    if bool(use_top_k.any()):
        kth_index = (vocab - top_k.clamp(min=1, max=vocab)).unsqueeze(1)  # (B, 1)
        kth_value = ascending.gather(1, kth_index)
        below_kth = (ascending < kth_value) & use_top_k.unsqueeze(1)
        ascending = ascending.masked_fill(below_kth, float("-inf"))
    if bool(use_top_p.any()):
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        outside_nucleus = (cumulative <= (1.0 - top_p).unsqueeze(1)) & use_top_p.unsqueeze(1)
        outside_nucleus[:, -1] = False  # always keep the most likely token
        ascending = ascending.masked_fill(outside_nucleus, float("-inf"))
    return torch.empty_like(scaled).scatter_(1, order, ascending)


def sample_from_logprobs(logprobs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of `logprobs` (B, V), drawn by inverting each row's CDF at `uniforms` (B,) in [0, 1).

    Exactly a categorical draw from exp(logprobs) (renormalised), like `torch.multinomial(p, 1)`, but each row's
    randomness is one number the caller draws from the row's own generator, and the work is one cumulative sum:
    about 50× faster than `multinomial` on a CPU for 32 × 49,152. The CDF is accumulated in float64, so tokens of
    tiny probability keep their share; a token of probability 0 (filtered by top-k/top-p) is never drawn.
    """
    probs = logprobs.exp().double()  # (B, V)
    cdf = probs.cumsum(dim=-1)  # (B, V), non-decreasing; flat across zero-probability tokens
    total = cdf[:, -1:]  # (B, 1)
    # the first token whose CDF exceeds u·total: it has probability > 0, since the CDF rises there
    tokens = torch.searchsorted(cdf, uniforms.double().unsqueeze(1) * total, right=True).squeeze(1)  # (B,)
    overflow = tokens >= probs.shape[1]  # u·total rounded up to total: the last token of probability > 0
    if bool(overflow.any()):
        last_positive = probs.shape[1] - 1 - (probs.flip(-1) > 0).to(torch.int8).argmax(dim=-1)
        tokens = torch.where(overflow, last_positive, tokens)
    return tokens
