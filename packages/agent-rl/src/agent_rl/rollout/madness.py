"""The tutorial's "madness" checks (`rollout.compute_madness_checklist`): signs that a policy is degenerating.

- `nonsense`: the completion loops (one short pattern repeated many times at its end) or writes special tokens
  of the tokenizer into its text.
- `wrong_toolcall`: a tool call that did not parse or named a tool the agent did not offer.

An episode that trips an enabled check gets `rollout.agent_madness_reward` instead of its reward.
"""

from __future__ import annotations

from collections.abc import Iterable

MADNESS_CHECKS = ("nonsense", "wrong_toolcall")

_MIN_REPEATS = 8
_MAX_PERIOD = 32


def is_repetition_loop(token_ids: list[int], min_repeats: int = _MIN_REPEATS, max_period: int = _MAX_PERIOD) -> bool:
    """True when some pattern of <= `max_period` tokens repeats back to back >= `min_repeats` times anywhere."""
    for period in range(1, max_period + 1):
        needed = period * (min_repeats - 1)
        run = 0
        for i in range(period, len(token_ids)):
            run = run + 1 if token_ids[i] == token_ids[i - period] else 0
            if run >= needed:
                return True
    return False


def contains_special_tokens(text: str, special_tokens: Iterable[str]) -> bool:
    return any(token and token in text for token in special_tokens)


def check_completion(completion_ids: list[int], text: str, tool_call_errors: int, special_tokens: Iterable[str], enabled: Iterable[str]) -> list[str]:
    """The names of the enabled checks that this completion trips."""
    tripped = []
    enabled = set(enabled)
    if "nonsense" in enabled and (is_repetition_loop(completion_ids) or contains_special_tokens(text, special_tokens)):
        tripped.append("nonsense")
    if "wrong_toolcall" in enabled and tool_call_errors > 0:
        tripped.append("wrong_toolcall")
    return tripped
