"""The learning-rate schedule: linear warm-up, then cosine decay (or constant)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int | None, min_lr_ratio: float = 0.0) -> float:
    """The LR multiplier for optimizer step `step` (0-based: the multiplier the first update uses is step 0's).

        warm-up (step < W):  (step + 1) / W
        cosine:              m + (1 - m) · ½ (1 + cos(π · min(1, (step - W) / (S - W))))
        constant:            1, after the warm-up, when `total_steps` S is None

    with W = `warmup_steps` and m = `min_lr_ratio`. The first update already moves (lr / W, not 0).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps is None:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
