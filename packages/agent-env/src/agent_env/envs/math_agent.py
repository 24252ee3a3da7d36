"""`agent_env/MathAgent-v0`: the tutorial's math agent (ReActAgent + python tool + math judge) on built-in tasks."""

from __future__ import annotations

from typing import Any

from agent_env.env import AgentEnv
from agent_env.types import WorkflowOutput, WorkflowTask
from agent_env.workflow import Workflow

SYSTEM_PROMPT = """
You are an agent specialized in solving math problems with tools.
Please solve the math problem given to you.
You can write and execute Python code to perform calculation or verify your answer.
You should return your final answer within \\boxed{}.
"""
"""The tutorial's system prompt, word for word."""


class MathAgentWorkflow(Workflow):
    """The tutorial's workflow: a ReActAgent with `execute_python_code`, at most 2 reasoning-acting iterations.

    With `max_iters=2` the agent makes at most 3 model calls: two reasoning steps and, if the second one still
    calls a tool, a summarising reply.
    """

    name = "math_agent_workflow"

    async def execute(self, workflow_task: WorkflowTask, model_tuner: Any) -> WorkflowOutput:
        from agentscope.agent import ReActAgent
        from agentscope.formatter import DashScopeChatFormatter
        from agentscope.memory import InMemoryMemory
        from agentscope.message import Msg
        from agentscope.tool import Toolkit, execute_python_code

        toolkit = Toolkit()
        toolkit.register_tool_function(execute_python_code)
        agent = ReActAgent(
            name="math_react_agent",
            sys_prompt=SYSTEM_PROMPT,
            model=model_tuner,
            formatter=DashScopeChatFormatter(),
            toolkit=toolkit,
            memory=InMemoryMemory(),
            max_iters=2,
        )
        agent.set_console_output_enabled(False)
        result = await agent.reply(Msg("user", workflow_task.task.main_query, role="user"))
        return WorkflowOutput(reward=None, metadata={"final_answer": result.get_text_content() or ""})


def make_math_agent_env(level: str = "easy", split: str = "train", judge: Any = None, **env_kwargs: Any) -> AgentEnv:
    """The math agent over the built-in arithmetic tasks of `level` (see `agent_env.tasks.arithmetic`)."""
    from agent_env.judges.math import MathAnswerAsJudge
    from agent_env.tasks.arithmetic import ArithmeticTasks

    env_kwargs.setdefault("max_turns", 3)
    return AgentEnv(MathAgentWorkflow, judge if judge is not None else MathAnswerAsJudge(), ArithmeticTasks(level=level, split=split), **env_kwargs)
