"""`agent_env/Completion-v0`: one model call per episode, scored by plain reward functions (TRL's habit)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from agent_env.env import AgentEnv
from agent_env.judge import JudgeResult
from agent_env.types import Task, WorkflowOutput, WorkflowTask
from agent_env.workflow import Workflow

RewardFunction = Callable[..., Any]


class CompletionWorkflow(Workflow):
    """Send the task's messages (`init_messages`, else `main_query` as one user turn) and keep the reply."""

    name = "completion"

    async def execute(self, workflow_task: WorkflowTask, model_tuner: Any) -> WorkflowOutput:
        task = workflow_task.task
        messages = task.init_messages or [{"role": "user", "content": task.main_query}]
        response = await model_tuner(messages)
        text = "".join(block.get("text", "") for block in response.content if block.get("type") == "text")
        return WorkflowOutput(metadata={"completion": text, "final_answer": text, "prompt": messages})


class RewardFunctionJudge:
    """A weighted sum of TRL-style reward functions: `fn(prompts, completions, **columns) -> list[float]`.

    Each function is called for one episode with `prompts=[messages]`, `completions=[[{"role": "assistant",
    "content": text}]]`, `completion_ids=None`, `task=[Task]` and every key of `task.metadata` as a one-element
    list (so `answer=[...]` arrives as TRL passes dataset columns). Async functions are awaited. A function may
    return a list (TRL) or a single number. Its `__name__` names its component in `info["reward_components"]`;
    weight 0 makes it a logged metric only. `is_success` is True when the weighted reward is positive, or, with
    `success_component`, when that component is positive.
    """

    def __init__(self, reward_fns: Sequence[RewardFunction], weights: Sequence[float] | None = None, success_component: str | None = None) -> None:
        if not reward_fns:
            raise ValueError("Completion-v0 needs at least one reward function: reward_fns=[fn, ...].")
        self.reward_fns = list(reward_fns)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.reward_fns)
        if len(self.weights) != len(self.reward_fns):
            raise ValueError(f"Got {len(self.reward_fns)} reward functions but {len(self.weights)} weights; give one weight per function.")
        self.success_component = success_component

    async def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> JudgeResult:
        task: Task = workflow_task.task
        text = workflow_output.metadata.get("completion", "")
        columns = {key: [value] for key, value in task.metadata.items()}
        kwargs = {"prompts": [workflow_output.metadata.get("prompt", [])], "completions": [[{"role": "assistant", "content": text}]],
                  "completion_ids": None, "task": [task], **columns}
        components: dict[str, float] = {}
        total = 0.0
        for fn, weight in zip(self.reward_fns, self.weights, strict=True):
            value = fn(**kwargs)
            if inspect.isawaitable(value):
                value = await value
            if isinstance(value, (list, tuple)):
                value = value[0]
            value = 0.0 if value is None else float(value)
            components[getattr(fn, "__name__", type(fn).__name__)] = value
            total += weight * value
        success = components[self.success_component] > 0 if self.success_component else total > 0
        return JudgeResult(total, success, components)


def make_completion_env(tasks: Sequence[Task | dict[str, Any]] | None = None, reward_fns: Sequence[RewardFunction | str] | None = None,
                        weights: Sequence[float] | None = None, success_component: str | None = None, judge: Any = None,
                        **env_kwargs: Any) -> AgentEnv:
    """A single-turn env from a task list (`Task`s or dicts with `Task`'s fields) scored by reward functions
    (callables or `load_object` references such as `"my_rewards:correctness"`) or by any `judge`."""
    if (reward_fns is None) == (judge is None):
        raise ValueError("Completion-v0 is scored by reward_fns=[fn, ...] or by judge=...; give exactly one.")
    if reward_fns is not None:
        from agent_env.loading import load_object

        judge = RewardFunctionJudge([load_object(fn) if isinstance(fn, str) else fn for fn in reward_fns], weights, success_component)
    task_list = [task if isinstance(task, Task) else Task.model_validate(task) for task in tasks] if isinstance(tasks, list) else tasks
    env_kwargs.setdefault("max_turns", 1)
    env_kwargs.setdefault("sandbox_python_tool", False)
    return AgentEnv(CompletionWorkflow, judge, task_list, **env_kwargs)
