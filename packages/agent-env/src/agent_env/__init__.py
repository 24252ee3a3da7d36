"""agent-env: every agent workflow and its judge as a Gymnasium-style multi-turn env for tool-using agents.

    import agent_env, gymnasium
    env = gymnasium.make("agent_env/MathAgent-v0")
    obs, info = env.reset(seed=0)          # obs = {"messages": [...], "tools": [...], "call_id": ...}
    obs, reward, terminated, truncated, info = env.step("<tool_call>...</tool_call>")
"""

from agent_env.checker import check_env
from agent_env.env import AgentEnv
from agent_env.judge import BaseJudge, JudgeResult
from agent_env.loading import load_object
from agent_env.model_tuner import EpisodeClosed, ModelRequest, ModelTuner
from agent_env.registration import make, register_builtin_envs
from agent_env.termination import TerminationReason
from agent_env.tool_call_format import HermesToolCallFormat, ToolCallFormat
from agent_env.types import Task, WorkflowOutput, WorkflowTask
from agent_env.workflow import Workflow

register_builtin_envs()

__all__ = [
    "AgentEnv",
    "BaseJudge",
    "EpisodeClosed",
    "HermesToolCallFormat",
    "JudgeResult",
    "ModelRequest",
    "ModelTuner",
    "Task",
    "TerminationReason",
    "ToolCallFormat",
    "Workflow",
    "WorkflowOutput",
    "WorkflowTask",
    "check_env",
    "load_object",
    "make",
]
