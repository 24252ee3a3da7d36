"""Every episode end has a name: `TerminationReason`, and whether it terminates or truncates.

| reason             | flag         | reward                         | when                                                  |
|--------------------|--------------|--------------------------------|-------------------------------------------------------|
| `finished`         | `terminated` | the judge's (or the workflow's)| `execute()` returned                                  |
| `workflow_error`   | `terminated` | `workflow_error_reward`        | `execute()` raised                                    |
| `judge_error`      | `terminated` | `judge_error_reward`           | the judge raised, timed out or returned nonsense      |
| `max_turns`        | `truncated`  | `truncation_reward`            | the workflow asked for one model call too many        |
| `timeout`          | `truncated`  | `truncation_reward`            | the workflow's own time exceeded `episode_timeout_s`  |
| `context_overflow` | `truncated`  | `truncation_reward`            | the next prompt no longer fits the model's context    |
| `response_truncated`| `truncated` | `truncation_reward`            | the driver cut a completion at its token limit and chose to end the episode |

Truncated episodes are not judged: they did not end inside the task's MDP.
"""

from __future__ import annotations

from enum import StrEnum


class TerminationReason(StrEnum):
    FINISHED = "finished"
    WORKFLOW_ERROR = "workflow_error"
    JUDGE_ERROR = "judge_error"
    MAX_TURNS = "max_turns"
    TIMEOUT = "timeout"
    CONTEXT_OVERFLOW = "context_overflow"
    RESPONSE_TRUNCATED = "response_truncated"

    @property
    def truncates(self) -> bool:
        """True for limits outside the task (`truncated=True`), False for ends of the task (`terminated=True`)."""
        return self in TRUNCATING


TRUNCATING = frozenset(
    {TerminationReason.MAX_TURNS, TerminationReason.TIMEOUT, TerminationReason.CONTEXT_OVERFLOW, TerminationReason.RESPONSE_TRUNCATED}
)
