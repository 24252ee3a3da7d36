"""`agent_env/Workflow-v0`: any workflow + judge + tasks, each given as an object or a `load_object` spec."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent_env.env import AgentEnv
from agent_env.types import Task


def make_workflow_env(workflow: Any, judge: Any = None, tasks: Sequence[Task | dict[str, Any]] | None = None,
                      base_dir: str | Path | None = None, judge_kwargs: dict[str, Any] | None = None, **env_kwargs: Any) -> AgentEnv:
    """Build an `AgentEnv`. `workflow` and `judge` may be objects or specs such as `"workflow.py->MathAgentWorkflow"`,
    resolved against `base_dir`; a judge given as a class is instantiated with `judge_kwargs`."""
    from agent_env.loading import load_object

    if isinstance(workflow, str):
        workflow = load_object(workflow, base_dir=base_dir)
    if isinstance(judge, str):
        judge = load_object(judge, base_dir=base_dir)
    if isinstance(judge, type):
        judge = judge(**(judge_kwargs or {}))
    if isinstance(tasks, list):
        tasks = [task if isinstance(task, Task) else Task.model_validate(task) for task in tasks]
    return AgentEnv(workflow, judge, tasks, **env_kwargs)
