"""agent-env: every agent workflow and its judge as a Gymnasium-style multi-turn env for tool-using agents.

    import agent_env, gymnasium
    env = gymnasium.make("agent_env/MathAgent-v0")
    obs, info = env.reset(seed=0)          # obs = {"messages": [...], "tools": [...], "call_id": ...}
    obs, reward, terminated, truncated, info = env.step("<tool_call>...</tool_call>")

Importing the package registers the built-in env ids (strings only) and nothing else; the names below load
their modules on first use, so `import agent_env` stays fast (agentscope alone takes seconds to import).
"""

from typing import TYPE_CHECKING

from agent_env.loading import lazy_exports
from agent_env.registration import make, register_builtin_envs

_EXPORTS = {
    "AgentEnv": "agent_env.env",
    "BaseJudge": "agent_env.judge",
    "EpisodeClosed": "agent_env.model_tuner",
    "HermesToolCallFormat": "agent_env.tool_call_format",
    "JudgeResult": "agent_env.judge",
    "ModelRequest": "agent_env.model_tuner",
    "ModelTuner": "agent_env.model_tuner",
    "Task": "agent_env.types",
    "TerminationReason": "agent_env.termination",
    "ToolCallFormat": "agent_env.tool_call_format",
    "Workflow": "agent_env.workflow",
    "WorkflowOutput": "agent_env.types",
    "WorkflowTask": "agent_env.types",
    "check_env": "agent_env.checker",
    "load_object": "agent_env.loading",
}

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

if TYPE_CHECKING:
    from agent_env.checker import check_env
    from agent_env.env import AgentEnv
    from agent_env.judge import BaseJudge, JudgeResult
    from agent_env.loading import load_object
    from agent_env.model_tuner import EpisodeClosed, ModelRequest, ModelTuner
    from agent_env.termination import TerminationReason
    from agent_env.tool_call_format import HermesToolCallFormat, ToolCallFormat
    from agent_env.types import Task, WorkflowOutput, WorkflowTask
    from agent_env.workflow import Workflow


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)


register_builtin_envs()
