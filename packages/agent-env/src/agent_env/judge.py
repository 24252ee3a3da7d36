"""Judges: turn a finished episode into a reward.

A judge is any object with `compute_reward(workflow_task, workflow_output)` (sync or async) returning
`(reward, is_success)` or a `JudgeResult`. `BaseJudge` is the base class the tutorial's judges derive from.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import Any

from agent_env.types import WorkflowOutput, WorkflowTask


@dataclass(frozen=True)
class JudgeResult:
    """A judge's verdict. `components` are named parts of the reward (or weight-0 metrics), logged separately."""

    reward: float
    is_success: bool
    components: dict[str, float] = field(default_factory=dict)


class BaseJudge:
    """Base class of judges. Subclasses override `compute_reward` (sync or `async def`)."""

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> tuple[float, bool] | JudgeResult:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_reward(workflow_task, workflow_output).")


async def run_judge(judge: Any, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> JudgeResult:
    """Call a judge (sync or async) and normalise what it returns into a `JudgeResult`.

    A sync `compute_reward` runs in a worker thread, so one that blocks (a `time.sleep`, a slow library call)
    holds neither the event loop nor the other episodes on it, and a timeout around this call fires.
    """
    if inspect.iscoroutinefunction(judge.compute_reward):
        result = judge.compute_reward(workflow_task, workflow_output)
    else:
        result = await asyncio.to_thread(judge.compute_reward, workflow_task, workflow_output)
    if inspect.isawaitable(result):
        result = await result
    return as_judge_result(result, judge)


def as_judge_result(result: Any, judge: Any = None) -> JudgeResult:
    if isinstance(result, JudgeResult):
        return result
    if isinstance(result, tuple) and len(result) == 2:
        reward, is_success = result
        return JudgeResult(float(reward), bool(is_success))
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return JudgeResult(float(result), float(result) > 0)
    name = type(judge).__name__ if judge is not None else "the judge"
    raise TypeError(
        f"{name}.compute_reward returned {result!r}; return (reward, is_success) or JudgeResult(reward, is_success, components)."
    )
