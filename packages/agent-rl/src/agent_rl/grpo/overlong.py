"""DAPO's treatment of overlong responses: mask truncated episodes, or shape their reward with a soft length penalty."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_rl.rollout.samples import TrainingSample


def overlong_penalty(length: int, max_length: int, cache_length: int, penalty: float = 1.0) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), scaled by `penalty`:

        R_length(|y|) = 0                                        if |y| ≤ L_max - L_cache
                      = ((L_max - L_cache) - |y|) / L_cache      if L_max - L_cache < |y| ≤ L_max
                      = -1                                       if |y| > L_max

    A linear ramp from 0 to -1 over the last `cache_length` tokens of the budget.
    """
    if not 0 < cache_length <= max_length:
        raise ValueError(f"cache_length must be in (0, max_length={max_length}], got {cache_length}.")
    threshold = max_length - cache_length
    if length <= threshold:
        return 0.0
    if length <= max_length:
        return penalty * (threshold - length) / cache_length
    return -penalty


def apply_overlong_penalty(
    samples: Sequence[TrainingSample],
    max_length: int,
    cache_length: int,
    penalty: float = 1.0,
) -> list[TrainingSample]:
    """Copies of `samples` with `overlong_penalty` added to every sample's reward, per episode.

    An episode's length is its longest sample's `len(response_ids)`: the tokens after the first prompt that
    the collector's `max_response_length` budget counts. The penalty is recorded in `reward_components`
    under `overlong_penalty`. Apply it before computing advantages.
    """
    lengths: dict[tuple[str, str], int] = defaultdict(int)
    for sample in samples:
        key = (sample.group_id, sample.episode_id)
        lengths[key] = max(lengths[key], len(sample.response_ids))
    shaped = []
    for sample in samples:
        extra = overlong_penalty(
            lengths[(sample.group_id, sample.episode_id)], max_length, cache_length, penalty
        )
        components = {**sample.reward_components, "overlong_penalty": extra}
        shaped.append(replace(sample, reward=sample.reward + extra, reward_components=components))
    return shaped


def mask_truncated(samples: Sequence[TrainingSample]) -> list[TrainingSample]:
    """Copies of `samples` where those of truncated episodes (`response_truncated`) train no token (DAPO's
    overlong filtering): their `loss_mask` is all 0, so they add neither gradient nor trained-token count,
    while their reward still counts in their group's advantage baseline."""
    return [replace(s, loss_mask=[0] * len(s.loss_mask)) if s.response_truncated else s for s in samples]
