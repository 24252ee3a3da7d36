"""Scripted policies: what a perfect tool user answers, as a function of the observation (no model).

A policy is a plain `policy(obs) -> action` callable. Here they serve as demonstrations for a cold start
(`ajet.cold_start.policy`: the trainer plays them through the real env and fine-tunes the model on their turns),
as the "perfect tool user" baseline of a task source, and in demos and tests.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agent_env.messages import content_text, python_run

_QUESTION = re.compile(r"What is ([-+*/%() \d]+)\?")
_BINARY = re.compile(r"(-?\d+)\s*([-+*/%]|\*\*)\s*(-?\d+)")

PYTHON_TOOL = "execute_python_code"
"""The name of the python tool (agentscope's, and `agent_env.tools`' sandboxed one)."""


def python_tool_call(code: str) -> str:
    """A Hermes tool call of the python tool, written exactly as the built-in chat template renders one."""
    return "<tool_call>\n" + json.dumps({"name": PYTHON_TOOL, "arguments": {"code": code}}, ensure_ascii=False) + "\n</tool_call>"


def scripted_math_policy(obs: dict[str, Any], wrong: bool = False) -> str:
    """The perfect tool user of the built-in arithmetic tasks (any level, `calculator` included).

    First turn: one python tool call that prints the question's expression (`What is 4821 * 937?` →
    `print(4821 * 937)`). After the tool's result: `The answer is \\boxed{<what it printed>}.`
    `wrong=True` answers one more than the tool printed (a judge's 0, for demos).
    """
    last = obs["messages"][-1]
    if last["role"] == "tool":
        run = python_run(content_text(last["content"]))
        value = run.stdout.strip() if run else "0"
        if wrong:
            value = str(int(value) + 1) if value.lstrip("-").isdigit() else value + "1"
        return f"The answer is \\boxed{{{value}}}."
    return python_tool_call(f"print({question_expression(str(last['content']))})")


def question_expression(question: str) -> str:
    """The Python expression a `What is ...?` arithmetic question asks for (`0` when there is none)."""
    found = _QUESTION.search(question)
    if found:
        return found.group(1).strip()
    found = _BINARY.search(question)
    return " ".join(found.groups()) if found else "0"
