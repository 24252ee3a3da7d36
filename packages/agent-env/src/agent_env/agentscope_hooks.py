"""The one place agent-env reaches into agentscope: tool calls that did not parse get a readable error back.

agentscope's `Toolkit.call_tool_function` looks tools up by name; a tool call the model garbled would come back as
"FunctionNotFoundError", which teaches the model nothing. `ModelTuner` marks such calls with a `parse_error` key
on the `ToolUseBlock`; the wrapper installed here answers them with that error instead of calling any tool.
Blocks without the key (everything agentscope itself produces) go through untouched. Installed once, on the
first `AgentEnv` construction, never at import.
"""

from __future__ import annotations

import functools
from typing import Any

from agent_env.tool_call_format import ToolCall, tool_call_error_message

_INSTALLED = False


def install_toolkit_parse_error_hook() -> None:
    """Wrap `agentscope.tool.Toolkit.call_tool_function` (idempotent)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from agentscope.message import TextBlock
    from agentscope.tool import Toolkit, ToolResponse

    original = Toolkit.call_tool_function

    @functools.wraps(original)
    async def call_tool_function(self: Any, tool_call: dict[str, Any]) -> Any:
        error = tool_call.get("parse_error") if isinstance(tool_call, dict) else None
        if not error:
            return await original(self, tool_call)
        call = ToolCall(tool_call.get("id", ""), tool_call.get("name", ""), {}, tool_call.get("raw_input", ""), error)
        response = ToolResponse(content=[TextBlock(type="text", text=tool_call_error_message(call))])

        async def single() -> Any:
            yield response

        return single()

    Toolkit.call_tool_function = call_tool_function
    _INSTALLED = True
