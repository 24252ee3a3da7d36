"""`TrainingSample`: what one episode (or one stretch of it) gives the learner, token for token."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainingSample:
    """One training sequence: `prompt_ids` then `response_ids`.

    `response_ids` holds every token after the first prompt: the tokens the model sampled (`loss_mask` 1, with
    their engine `logprobs`) and the tokens the template and the environment inserted between turns — closing
    tokens the model did not write, tool results, the next generation prompt (`loss_mask` 0, logprob 0.0).
    Every sample of an episode carries the episode's reward; `group_id` ties the `num_repeat` episodes of a
    task together for GRPO.
    """

    task_id: str
    group_id: str
    episode_id: str
    sample_index: int
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reward: float = 0.0
    reward_components: dict[str, float] = field(default_factory=dict)
    is_success: bool = False
    termination_reason: str = ""
    response_truncated: bool = False
    num_turns: int = 0
    madness: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    def append(self, ids: list[int], trained: bool, logprobs: list[float] | None = None) -> None:
        self.response_ids.extend(ids)
        self.loss_mask.extend([1 if trained else 0] * len(ids))
        self.logprobs.extend(logprobs if trained and logprobs is not None else [0.0] * len(ids))

    def truncate(self, length: int) -> None:
        """Keep the first `length` response tokens."""
        del self.response_ids[length:], self.loss_mask[length:], self.logprobs[length:]

    @property
    def num_trained_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def total_length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
