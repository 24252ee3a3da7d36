"""GRPO advantages: each episode's reward against the other episodes of its group (the `num_repeat` tries of a task)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from agent_env.config.learner import AdvantageScaling

if TYPE_CHECKING:
    from agent_rl.rollout.samples import TrainingSample


ADVANTAGE_SCALINGS: tuple[str, ...] = ("group", "batch", "none")


def group_advantages(
    rewards: torch.Tensor,
    group_index: torch.Tensor,
    scaling: AdvantageScaling = "group",
    eps: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages of episodes from their rewards, relative to their group.

    With g(i) the group of episode i, mean_g and std_g the mean and the (Bessel-corrected) standard deviation
    of the rewards in group g, and std_B the standard deviation of every reward in the batch:

        group:  A_i = (r_i - mean_g(i)) / (std_g(i) + eps)
        batch:  A_i = (r_i - mean_g(i)) / (std_B + eps)
        none:   A_i =  r_i - mean_g(i)

    An episode of a zero-variance group (every reward equal, a group of one included) gets exactly 0 under
    every scaling: such a group carries no learning signal.

    Args:
        rewards: (N,) one reward per episode.
        group_index: (N,) integer group of each episode, in [0, G).
        scaling: `group`, `batch` or `none` (see `AdvantageScaling`).
        eps: added to the std, so a near-constant group does not blow up (TRL uses 1e-4).

    Returns:
        advantages: (N,) float32.
        zero_variance: (G,) bool, True for groups whose rewards are all equal.
    """
    if scaling not in ADVANTAGE_SCALINGS:
        raise ValueError(
            f"Unknown advantage scaling {scaling!r}; choose one of {', '.join(ADVANTAGE_SCALINGS)}."
        )
    rewards = rewards.to(torch.float32)  # (N,)
    group_index = group_index.to(torch.long)  # (N,)
    num_groups = int(group_index.max()) + 1 if group_index.numel() else 0
    counts = torch.zeros(num_groups).index_add_(0, group_index, torch.ones_like(rewards))  # (G,)
    mean_g = torch.zeros(num_groups).index_add_(0, group_index, rewards) / counts  # (G,)
    centered = rewards - mean_g[group_index]  # (N,)
    max_g = torch.full((num_groups,), -torch.inf).scatter_reduce_(0, group_index, rewards, "amax")  # (G,)
    min_g = torch.full((num_groups,), torch.inf).scatter_reduce_(0, group_index, rewards, "amin")  # (G,)
    zero_variance = max_g == min_g  # (G,)
    if scaling == "group":
        var_g = torch.zeros(num_groups).index_add_(0, group_index, centered**2) / (counts - 1).clamp(min=1)
        advantages = centered / (var_g.sqrt()[group_index] + eps)
    elif scaling == "batch":
        std_b = rewards.std() if rewards.numel() > 1 else torch.tensor(0.0)
        advantages = centered / (std_b + eps)
    else:
        advantages = centered
    advantages = torch.where(zero_variance[group_index], 0.0, advantages)  # (N,)
    return advantages, zero_variance


def episode_advantages(
    samples: Sequence[TrainingSample],
    scaling: AdvantageScaling = "group",
    eps: float = 1e-4,
) -> tuple[list[float], set[str]]:
    """The advantage of each sample: that of its episode within its group (`group_advantages`).

    An episode is one `(group_id, episode_id)`; its reward is the reward its samples carry (they share it; if
    they differ, their mean). Every sample of an episode gets the episode's advantage, so an episode that
    gave several samples (a rewritten history) counts once in its group's statistics.

    Returns:
        advantages: one per sample, in the order of `samples`.
        zero_variance_groups: the `group_id`s whose episodes all have the same reward.
    """
    episode_of: dict[tuple[str, str], int] = {}
    episode_rewards: list[list[float]] = []
    episode_group: list[int] = []
    group_of: dict[str, int] = {}
    sample_episode: list[int] = []
    for sample in samples:
        key = (sample.group_id, sample.episode_id)
        if key not in episode_of:
            episode_of[key] = len(episode_rewards)
            episode_rewards.append([])
            episode_group.append(group_of.setdefault(sample.group_id, len(group_of)))
        episode = episode_of[key]
        episode_rewards[episode].append(float(sample.reward))
        sample_episode.append(episode)
    if not samples:
        return [], set()
    rewards = torch.tensor([sum(r) / len(r) for r in episode_rewards], dtype=torch.float64)
    advantages, zero_variance = group_advantages(rewards, torch.tensor(episode_group), scaling, eps)
    group_ids = list(group_of)
    zero_variance_groups = {group_ids[g] for g in torch.nonzero(zero_variance).flatten().tolist()}
    per_episode = advantages.tolist()
    return [per_episode[e] for e in sample_episode], zero_variance_groups


def zero_variance_groups(samples: Sequence[TrainingSample]) -> set[str]:
    """The `group_id`s whose episodes all got the same reward (no learning signal under GRPO)."""
    return episode_advantages(samples, "none")[1]


def zero_variance_fraction(samples: Sequence[TrainingSample]) -> float:
    """The fraction of groups whose episodes all got the same reward (0.0 for no samples)."""
    groups = {sample.group_id for sample in samples}
    return len(zero_variance_groups(samples)) / len(groups) if groups else 0.0


def filter_zero_variance_groups(samples: Sequence[TrainingSample]) -> tuple[list[TrainingSample], set[str]]:
    """Drop the samples of zero-variance groups (DAPO's dynamic sampling keeps collecting until the batch is full).

    Returns the kept samples, in their order, and the dropped `group_id`s.
    """
    dropped = zero_variance_groups(samples)
    return [sample for sample in samples if sample.group_id not in dropped], dropped
