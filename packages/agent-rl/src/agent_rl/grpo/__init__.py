"""GRPO as small pure functions on tensors and samples: advantages, logprobs, the clipped loss, its metrics.

No I/O and no distributed calls here; the `Learner` (`agent_rl.learner`) composes them into a training step.
"""

from agent_rl.grpo.advantages import (
    AdvantageScaling,
    episode_advantages,
    filter_zero_variance_groups,
    group_advantages,
    zero_variance_fraction,
    zero_variance_groups,
)
from agent_rl.grpo.logprobs import (
    token_entropy,
    token_logprobs,
    token_logprobs_and_entropy,
    token_logprobs_with_entropy,
)
from agent_rl.grpo.loss import (
    LossAggregation,
    PolicyLoss,
    TisMode,
    aggregate_loss,
    clipped_surrogate,
    grpo_loss,
    k3_kl,
    truncated_importance_weights,
)
from agent_rl.grpo.metrics import approx_kl, clipped_tokens, masked_max, masked_min, masked_sum
from agent_rl.grpo.overlong import apply_overlong_penalty, mask_truncated, overlong_penalty

__all__ = [
    "AdvantageScaling",
    "LossAggregation",
    "PolicyLoss",
    "TisMode",
    "aggregate_loss",
    "apply_overlong_penalty",
    "approx_kl",
    "clipped_surrogate",
    "clipped_tokens",
    "episode_advantages",
    "filter_zero_variance_groups",
    "group_advantages",
    "grpo_loss",
    "k3_kl",
    "mask_truncated",
    "masked_max",
    "masked_min",
    "masked_sum",
    "overlong_penalty",
    "token_entropy",
    "token_logprobs",
    "token_logprobs_and_entropy",
    "token_logprobs_with_entropy",
    "truncated_importance_weights",
    "zero_variance_fraction",
    "zero_variance_groups",
]
