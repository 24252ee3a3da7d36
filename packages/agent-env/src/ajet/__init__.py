"""Compatibility module for the AgentScope Tuner / AgentJet tutorial: `from ajet import ModelTuner, Workflow, ...`.

Everything here is agent-env's own API under the tutorial's names.
"""

from agent_env.judge import BaseJudge, JudgeResult
from agent_env.model_tuner import ModelTuner
from agent_env.types import Task, WorkflowOutput, WorkflowTask
from agent_env.workflow import Workflow

__all__ = ["BaseJudge", "JudgeResult", "ModelTuner", "Task", "Workflow", "WorkflowOutput", "WorkflowTask"]
