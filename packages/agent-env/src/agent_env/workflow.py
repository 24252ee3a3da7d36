"""`Workflow`: the user's agent program, run by `AgentEnv` one model call at a time."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_env.model_tuner import ModelTuner
    from agent_env.types import WorkflowOutput, WorkflowTask


class Workflow:
    """Base class of agent programs.

    Subclasses implement `async execute(workflow_task, model_tuner) -> WorkflowOutput`. The workflow owns its
    loop, memory and tools; `model_tuner` is its only door to the LLM (an agentscope `ChatModelBase`, so
    `ReActAgent(model=model_tuner, ...)` works, and `model_tuner.as_openai_client()` serves agents written
    against the OpenAI SDK). A new instance is created for every episode, so attributes set in `execute` never
    leak between episodes.
    """

    name: str = "workflow"

    async def execute(self, workflow_task: WorkflowTask, model_tuner: ModelTuner) -> WorkflowOutput:
        raise NotImplementedError(f"{type(self).__name__} must implement `async def execute(self, workflow_task, model_tuner)`.")
