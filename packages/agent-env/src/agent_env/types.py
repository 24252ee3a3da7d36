"""The data that flows through a workflow: `Task`, `WorkflowTask`, `WorkflowOutput`.

These are the tutorial's names (AgentJet / AgentScope Tuner); `ajet` re-exports them unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Task(BaseModel):
    """One problem for an agent. Task sources (built-in generators, datasets, env services) all yield this."""

    model_config = ConfigDict(extra="forbid")

    main_query: str = ""
    """The user's request, e.g. the math question. Workflows usually send it as the first user message."""
    init_messages: list[dict[str, Any]] = Field(default_factory=list)
    """Messages that open the conversation (OpenAI chat format), for workflows that start from a history."""
    task_id: str = ""
    """Stable id of the task; the `num_repeat` episodes of one task share it and form one GRPO group."""
    env_type: str = ""
    """Free-form tag of where the task came from (e.g. `arithmetic`, `gsm8k`, an env-service name)."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Anything else; the reference answer lives in `metadata["answer"]`."""


class WorkflowTask(BaseModel):
    """What `Workflow.execute` receives: a task plus the identity of this episode."""

    model_config = ConfigDict(extra="forbid")

    task: Task
    episode_id: str = ""
    """Unique id of this episode (one run of the workflow on the task)."""
    repeat_index: int = 0
    """Which of the `num_repeat` episodes of the task this is (0-based)."""

    @property
    def task_id(self) -> str:
        return self.task.task_id


class WorkflowOutput(BaseModel):
    """What `Workflow.execute` returns.

    If `reward` is set, the env uses it as the episode's final reward and does not call the judge.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    reward: float | None = None
    is_success: bool | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Free-form results for the judge, e.g. `{"final_answer": "... \\boxed{18}"}`."""
    log_metrics: dict[str, float] = Field(default_factory=dict)
    """Numbers the workflow wants logged; they reach `info["log_metrics"]` and the trainer's metrics."""
