"""GRPO's pure functions: the invariants of docs/design.md, and equality with TRL 1.16's formulas on identical tensors.

TRL is the oracle: where it has a callable helper (`trl.trainer.utils.selective_log_softmax`, `entropy_from_logits`,
`nanstd`) we call it; where the formula lives inside `GRPOTrainer` methods we reproduce its expression verbatim,
with the line of `trl/trainer/grpo_trainer.py` (TRL 1.16.0) it comes from.
"""

from __future__ import annotations

import math

import pytest
import torch
from agent_rl.grpo import (
    aggregate_loss,
    apply_overlong_penalty,
    approx_kl,
    clipped_tokens,
    episode_advantages,
    filter_zero_variance_groups,
    group_advantages,
    grpo_loss,
    k3_kl,
    mask_truncated,
    overlong_penalty,
    token_entropy,
    token_logprobs,
    token_logprobs_and_entropy,
    token_logprobs_with_entropy,
    truncated_importance_weights,
    zero_variance_fraction,
)
from agent_rl.rollout.samples import TrainingSample


@pytest.fixture(scope="module")
def trl_utils():
    """TRL's helpers, imported once per worker (importing TRL takes seconds, so not at collection)."""
    from trl.trainer import utils

    return utils


def _sample(
    group: str, episode: str, reward: float, mask: list[int], index: int = 0, truncated: bool = False
) -> TrainingSample:
    return TrainingSample(
        task_id=group,
        group_id=group,
        episode_id=episode,
        sample_index=index,
        prompt_ids=[1, 2],
        response_ids=list(range(3, 3 + len(mask))),
        loss_mask=list(mask),
        logprobs=[-0.5 * m for m in mask],
        reward=reward,
        response_truncated=truncated,
    )


def _batch(seed: int = 0, batch: int = 6, length: int = 7, vocab: int = 11):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, vocab, (batch, length), generator=gen)
    mask = (torch.rand(batch, length, generator=gen) > 0.3).to(torch.int64)
    mask[:, 0] = 1
    advantages = torch.randn(batch, 1, generator=gen, dtype=torch.float64)
    return logits, tokens, mask, advantages


# ---------------------------------------------------------------- advantages


@pytest.mark.parametrize("scaling", ["group", "batch", "none"])
def test_group_advantages_equal_trl(trl_utils, scaling):
    num_generations = 4
    gen = torch.Generator().manual_seed(1)
    rewards = torch.rand(3 * num_generations, generator=gen)
    rewards[8:] = 1.0  # one zero-variance group
    group_index = torch.arange(3).repeat_interleave(num_generations)

    # grpo_trainer.py lines 2765-2787 (multi_objective_aggregation="sum_then_normalize")
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scaling in ["group", "none"]:
        std_rewards = trl_utils.nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    else:
        std_rewards = trl_utils.nanstd(rewards).expand_as(rewards)
    expected = rewards - mean_grouped_rewards
    if scaling != "none":
        expected = expected / (std_rewards + 1e-4)

    advantages, zero_variance = group_advantages(rewards, group_index, scaling, eps=1e-4)
    torch.testing.assert_close(advantages, expected, rtol=1e-6, atol=1e-6)
    assert zero_variance.tolist() == [False, False, True]


@pytest.mark.parametrize("scaling", ["group", "batch", "none"])
def test_zero_variance_group_gets_zero_advantage(scaling):
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.0, 1.0, 0.7])  # 0.1 * 3 / 3 != 0.1 in floating point
    advantages, zero_variance = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1, 2]), scaling)
    assert advantages[:3].tolist() == [0.0, 0.0, 0.0]
    assert advantages[5].item() == 0.0  # a group of one has no variance either
    assert zero_variance.tolist() == [True, False, True]
    assert advantages[3] < 0 < advantages[4]


def test_episode_advantages_count_each_episode_once_and_reach_all_its_samples():
    samples = [
        _sample("g1", "a", 1.0, [1, 1], index=0),
        _sample("g1", "a", 1.0, [0, 1], index=1),  # the same episode: a second sample after a history rewrite
        _sample("g1", "b", 0.0, [1]),
        _sample("g2", "c", 0.5, [1]),
        _sample("g2", "d", 0.5, [1]),
    ]
    advantages, zero_variance = episode_advantages(samples, "group", eps=0.0)
    # group g1 has two episodes (1.0 and 0.0): mean 0.5, std sqrt(0.5); episode a counts once, not twice
    expected = 0.5 / math.sqrt(0.5)
    assert advantages == pytest.approx([expected, expected, -expected, 0.0, 0.0])
    assert zero_variance == {"g2"}
    assert zero_variance_fraction(samples) == 0.5
    kept, dropped = filter_zero_variance_groups(samples)
    assert dropped == {"g2"} and [s.group_id for s in kept] == ["g1", "g1", "g1"]


def test_unknown_advantage_scaling_names_the_choices():
    with pytest.raises(ValueError, match="group, batch, none"):
        group_advantages(torch.zeros(2), torch.zeros(2, dtype=torch.long), "rank")  # type: ignore[arg-type]


# ---------------------------------------------------------------- logprobs


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_equal_trl_selective_log_softmax(trl_utils, temperature):
    logits, tokens, _, _ = _batch()
    logits = logits.float()
    expected = trl_utils.selective_log_softmax(logits, tokens, temperature=temperature)
    torch.testing.assert_close(token_logprobs(logits, tokens, temperature), expected, rtol=1e-6, atol=1e-6)


def test_token_logprobs_gradient_equals_log_softmax_gradient():
    logits, tokens, _, _ = _batch()
    weights = torch.randn(tokens.shape, dtype=torch.float64)
    mine = logits.clone().requires_grad_()
    (token_logprobs(mine, tokens, 0.7, chunk_rows=5) * weights).sum().backward()
    naive = logits.clone().requires_grad_()
    reference = torch.log_softmax(naive / 0.7, dim=-1).gather(-1, tokens[..., None]).squeeze(-1)
    (reference * weights).sum().backward()
    torch.testing.assert_close(mine.grad, naive.grad, rtol=1e-6, atol=1e-7)


def test_token_logprobs_of_bf16_logits_are_computed_in_float32():
    logits, tokens, _, _ = _batch()
    low = logits.to(torch.bfloat16).requires_grad_()
    logps = token_logprobs(low, tokens)
    assert logps.dtype == torch.float32
    expected = torch.log_softmax(low.detach().float(), -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(logps, expected)
    logps.sum().backward()
    assert low.grad.dtype == torch.bfloat16


def test_token_entropy_equals_trl_entropy_from_logits(trl_utils):
    logits, _, _, _ = _batch()
    logits = logits.float()
    torch.testing.assert_close(token_entropy(logits, 0.7), trl_utils.entropy_from_logits(logits / 0.7))


def test_scoring_pass_gives_the_same_logprobs_and_entropies_in_one_pass():
    logits, tokens, _, _ = _batch()
    logits = logits.float()
    logprobs, entropy = token_logprobs_and_entropy(logits, tokens, 0.7, chunk_rows=4)
    assert torch.equal(
        logprobs, token_logprobs(logits, tokens, 0.7)
    )  # bit-equal: the first ratio is exactly 1
    torch.testing.assert_close(entropy, token_entropy(logits, 0.7))


def test_update_pass_gives_differentiable_logprobs_and_the_entropy_in_one_pass():
    logits, tokens, _, _ = _batch()
    alone = logits.float().requires_grad_()
    fused = logits.float().requires_grad_()
    expected = token_logprobs(alone, tokens, 0.7, chunk_rows=4)
    logprobs, entropy = token_logprobs_with_entropy(fused, tokens, 0.7, chunk_rows=4)
    assert torch.equal(logprobs, expected) and not entropy.requires_grad
    torch.testing.assert_close(entropy, token_entropy(logits.float(), 0.7))
    expected.sum().backward()
    logprobs.sum().backward()
    assert torch.equal(fused.grad, alone.grad)


def test_token_logprobs_reject_a_zero_temperature():
    logits, tokens, _, _ = _batch()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(logits, tokens, 0.0)


# ---------------------------------------------------------------- loss invariants


def test_first_update_ratio_is_exactly_one():
    logits, tokens, mask, advantages = _batch()
    logits = logits.float().requires_grad_()
    old = token_logprobs(logits.detach(), tokens, 0.7)  # the same forward, computed before the update
    new = token_logprobs(logits, tokens, 0.7)
    out = grpo_loss(new, old, advantages.float(), mask)
    assert torch.equal(out.ratio, torch.ones_like(out.ratio))
    low, high = clipped_tokens(out.ratio, advantages)
    assert not low.any() and not high.any()
    # with ratio 1 the clipped surrogate's gradient is the policy gradient -A ∇log π / N_tokens
    out.loss.backward()
    expected = logits.detach().clone().requires_grad_()
    vanilla = -(advantages.float() * token_logprobs(expected, tokens, 0.7) * mask).sum() / mask.sum()
    vanilla.backward()
    torch.testing.assert_close(logits.grad, expected.grad)


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "dr_grpo"])
def test_masked_tokens_get_no_gradient(aggregation):
    logits, tokens, mask, advantages = _batch()
    logits = logits.float().requires_grad_()
    old = token_logprobs(logits.detach(), tokens) + 0.3 * torch.randn(tokens.shape)
    old = torch.where(mask.bool(), old, torch.inf)  # garbage where nothing was sampled must not leak in
    engine = torch.where(mask.bool(), old - 0.1, 0.0)
    ref = old + 0.2
    new = token_logprobs(logits, tokens)
    out = grpo_loss(
        new,
        old,
        advantages.float(),
        mask,
        aggregation=aggregation,
        max_length=16,
        importance_weights=truncated_importance_weights(old, engine, 2.0, "truncate", mask),
        ref_per_token_logps=ref,
        beta=0.04,
    )
    out.loss.backward()
    assert torch.isfinite(out.loss)
    masked_positions = ~mask.bool()
    assert masked_positions.any()
    assert torch.count_nonzero(logits.grad[masked_positions]) == 0
    assert torch.count_nonzero(logits.grad[mask.bool()]) > 0


def _trl_per_token_loss(
    per_token_logps,
    old_per_token_logps,
    advantages,
    epsilon_low,
    epsilon_high,
    is_ratio=None,
    ref=None,
    beta=0.0,
):
    # grpo_trainer.py lines 3082-3097: log_ratio, coef_1 (token level), k3 KL
    log_ratio = per_token_logps - old_per_token_logps
    coef_1 = torch.exp(log_ratio)
    if beta != 0.0:
        per_token_kl = torch.exp(ref - per_token_logps) - (ref - per_token_logps) - 1
    # lines 3113-3120: two-sided clipping, loss types grpo/bnpo/dr_grpo/dapo
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss1 = coef_1 * advantages
    per_token_loss2 = coef_2 * advantages
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    # line 3147: vLLM importance sampling correction; line 3150: KL term
    if is_ratio is not None:
        per_token_loss = per_token_loss * is_ratio
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    return per_token_loss


@pytest.mark.parametrize(
    "trl_loss_type, aggregation",
    [("dapo", "token-mean"), ("dr_grpo", "dr_grpo"), ("grpo", "seq-mean-token-mean")],
)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_equals_trl(trl_loss_type, aggregation, beta):
    torch.manual_seed(11)  # the noise below must not depend on which tests ran before in this worker
    logits, tokens, mask, advantages = _batch(seed=3)
    mask = mask.float()
    old = token_logprobs(logits, tokens)
    # ratios well outside the clip range
    new_logits = (logits + 0.4 * torch.randn_like(logits)).requires_grad_()
    new = token_logprobs(new_logits, tokens).double()
    old, ref, engine = old.double(), old.double() - 0.05, old.double() + 0.3 * torch.randn_like(old.double())
    max_completion_length = tokens.shape[1] + 3
    is_ratio = truncated_importance_weights(old, engine, 2.0, "truncate", mask)

    per_token_loss = _trl_per_token_loss(new, old, advantages, 0.2, 0.28, is_ratio, ref, beta)
    # lines 3153-3171 (one process, one accumulation step, steps_per_generation 1: every normalizer is 1)
    if trl_loss_type == "grpo":
        expected = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif trl_loss_type == "dr_grpo":
        expected = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    else:
        # num_items_in_batch = mask.sum()
        expected = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)

    out = grpo_loss(
        new,
        old,
        advantages,
        mask,
        epsilon_low=0.2,
        epsilon_high=0.28,
        aggregation=aggregation,
        max_length=max_completion_length,
        importance_weights=is_ratio,
        ref_per_token_logps=ref,
        beta=beta,
    )
    torch.testing.assert_close(out.loss, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.per_token_loss * mask, per_token_loss * mask, rtol=1e-12, atol=1e-12)
    low, high = clipped_tokens(out.ratio, advantages)
    assert low.any() and high.any()  # the test covers both clip branches


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean-token-mean", "dr_grpo"])
def test_micro_batches_add_up_to_the_whole_batch_loss(aggregation):
    """Passing the step's global counts makes the micro-batch losses sum to the full-batch loss."""
    logits, tokens, mask, advantages = _batch(seed=4, batch=8)
    old = token_logprobs(logits, tokens)
    new = token_logprobs(logits + 0.1, tokens)
    whole = grpo_loss(new, old, advantages, mask, aggregation=aggregation, max_length=20).loss
    parts = sum(
        grpo_loss(
            new[rows],
            old[rows],
            advantages[rows],
            mask[rows],
            aggregation=aggregation,
            max_length=20,
            num_tokens=mask.sum(),
            num_sequences=8,
        ).loss
        for rows in (slice(0, 3), slice(3, 4), slice(4, 8))
    )
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12)


def test_dr_grpo_without_max_length_says_what_to_pass():
    with pytest.raises(ValueError, match="pass max_length"):
        aggregate_loss(torch.ones(2, 3), torch.ones(2, 3), "dr_grpo")


def test_beta_without_reference_logprobs_says_what_to_do():
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="set beta = 0"):
        grpo_loss(x, x, x, torch.ones(1, 2), beta=0.1)


@pytest.mark.parametrize("mode, trl_mode", [("truncate", "token_truncate"), ("mask", "token_mask")])
def test_truncated_importance_weights_equal_trl(mode, trl_mode):
    gen = torch.Generator().manual_seed(5)
    old = -torch.rand(4, 9, generator=gen) * 3
    sampling = old + torch.randn(4, 9, generator=gen)
    mask = (torch.rand(4, 9, generator=gen) > 0.2).float()
    clip_max, clip_min = 2.0, None
    # grpo_trainer.py lines 2662-2703 (token-level modes)
    per_token_logps_diff = (old - sampling) * mask
    per_token_logps_diff = torch.nan_to_num(per_token_logps_diff, nan=0.0)
    expected = torch.exp(per_token_logps_diff)
    if trl_mode == "token_truncate":
        expected = torch.clamp(expected, min=clip_min, max=clip_max)
    else:
        invalid_mis_mask = (expected < -math.inf) | (expected > clip_max)
        expected = expected.masked_fill(invalid_mis_mask, value=0.0)
    weights = truncated_importance_weights(old, sampling, clip_max, mode, mask)
    torch.testing.assert_close(weights, expected)
    assert (weights == (2.0 if mode == "truncate" else 0.0)).any()


def test_clip_fractions_equal_trl():
    gen = torch.Generator().manual_seed(6)
    coef_1 = torch.exp(torch.randn(5, 8, generator=gen) * 0.5)
    advantages = torch.randn(5, 1, generator=gen)
    # grpo_trainer.py lines 3274-3275
    is_low_clipped = (coef_1 < 1 - 0.2) & (advantages < 0)
    is_high_clipped = (coef_1 > 1 + 0.28) & (advantages > 0)
    low, high = clipped_tokens(coef_1, advantages, 0.2, 0.28)
    assert torch.equal(low, is_low_clipped) and torch.equal(high, is_high_clipped)


def test_kl_estimators_are_zero_at_equal_policies_and_positive_elsewhere():
    logps = -torch.rand(3, 4)
    assert torch.equal(k3_kl(logps, logps), torch.zeros(3, 4))
    assert torch.equal(approx_kl(logps, logps), torch.zeros(3, 4))
    other = logps - torch.rand(3, 4) - 0.01
    assert (k3_kl(logps, other) > 0).all() and (approx_kl(logps, other) > 0).all()


# ---------------------------------------------------------------- overlong responses


def test_overlong_penalty_ramps_from_zero_to_minus_one_over_the_cache():
    assert [overlong_penalty(n, max_length=100, cache_length=20) for n in (50, 80, 90, 100, 101)] == [
        0.0,
        0.0,
        -0.5,
        -1.0,
        -1.0,
    ]
    assert overlong_penalty(90, 100, 20, penalty=0.5) == -0.25
    with pytest.raises(ValueError, match="cache_length"):
        overlong_penalty(10, 100, 0)


def test_overlong_penalty_applies_per_episode_and_keeps_inputs_unchanged():
    samples = [
        _sample("g", "a", 1.0, [1] * 5),
        _sample("g", "a", 1.0, [1] * 9, index=1),
        _sample("g", "b", 1.0, [1] * 5),
    ]
    shaped = apply_overlong_penalty(samples, max_length=10, cache_length=4)
    # episode a's longest sample has 9 tokens: (6 - 9) / 4 = -0.75 on both of its samples
    assert [s.reward for s in shaped] == [0.25, 0.25, 1.0]
    assert shaped[0].reward_components["overlong_penalty"] == -0.75
    assert [s.reward for s in samples] == [1.0, 1.0, 1.0]


def test_truncated_episodes_are_masked_out():
    samples = [_sample("g", "a", 1.0, [1, 0, 1], truncated=True), _sample("g", "b", 0.0, [1, 1])]
    masked = mask_truncated(samples)
    assert masked[0].loss_mask == [0, 0, 0] and masked[1].loss_mask == [1, 1]
    assert samples[0].loss_mask == [1, 0, 1]
