"""Tool-call formats: how a completion's text becomes an assistant message with tool calls.

The default is Hermes (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`), which Qwen, Hermes and our
built-in chat template for tool-less templates (SmolLM2) all use. A format is a named, swappable part: pass
`tool_call_format="hermes"` (or an instance of your own `ToolCallFormat`) to an env.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

PARSE_ERROR_PREFIX = "ToolCallParseError"
"""How the tool result of a call that did not parse starts (`tool_call_error_message`)."""

INVALID_TOOL_NAME = "invalid_tool_call"
"""Name given to a tool call whose name could not be read; the agent gets a parse error back for it."""


@dataclass
class ToolCall:
    """One tool call the model wrote. `error` is set (and `arguments` is `{}`) when it did not parse."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw: str = ""
    error: str | None = None

    def to_openai(self) -> dict[str, Any]:
        arguments = self.raw if self.error else json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass
class ParsedCompletion:
    """A completion split into its visible text and its tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(call.error for call in self.tool_calls)

    def to_message(self) -> dict[str, Any]:
        """The assistant message in OpenAI chat format."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return message


class ToolCallFormat(Protocol):
    """Turns completion text into content + tool calls. `name` is how configs refer to it."""

    name: str

    def parse(self, text: str, call_id_prefix: str) -> ParsedCompletion: ...


class HermesToolCallFormat:
    """`<tool_call>{"name": "f", "arguments": {...}}</tool_call>` blocks anywhere in the text.

    Text outside the blocks is the message content. A block that is not valid JSON, lacks `name`, has
    non-object `arguments`, or is left unclosed (a truncated completion) becomes a `ToolCall` with `error` set,
    so the agent is told what was wrong instead of the episode silently ending.
    """

    name = "hermes"
    _BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.DOTALL)
    _NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')

    def parse(self, text: str, call_id_prefix: str = "call") -> ParsedCompletion:
        if "<tool_call>" not in text:
            return ParsedCompletion(content=text.strip())
        calls: list[ToolCall] = []
        for index, match in enumerate(self._BLOCK.finditer(text)):
            raw = match.group(1).strip()
            closed = match.group(0).endswith("</tool_call>")
            calls.append(self._parse_block(raw, closed, f"{call_id_prefix}_{index}"))
        content = self._BLOCK.sub("", text).strip()
        return ParsedCompletion(content=content, tool_calls=calls)

    def _parse_block(self, raw: str, closed: bool, call_id: str) -> ToolCall:
        def invalid(reason: str) -> ToolCall:
            found = self._NAME.search(raw)
            return ToolCall(call_id, found.group(1) if found else INVALID_TOOL_NAME, {}, raw, reason)

        if not closed:
            return invalid("the <tool_call> block is not closed with </tool_call>")
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as error:
            return invalid(f"the tool call is not valid JSON ({error.msg} at position {error.pos})")
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            return invalid('the tool call must be a JSON object with a string "name"')
        arguments = payload.get("arguments", payload.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        if not isinstance(arguments, dict):
            return invalid('"arguments" must be a JSON object')
        return ToolCall(call_id, payload["name"], arguments, raw)


TOOL_CALL_FORMATS: dict[str, type] = {"hermes": HermesToolCallFormat}


def get_tool_call_format(spec: str | ToolCallFormat) -> ToolCallFormat:
    """Look a format up by name, or pass an instance through."""
    if not isinstance(spec, str):
        return spec
    try:
        return TOOL_CALL_FORMATS[spec]()
    except KeyError:
        raise ValueError(
            f"Unknown tool_call_format {spec!r}; choose one of {sorted(TOOL_CALL_FORMATS)} "
            "or pass an object with `name` and `parse(text, call_id_prefix)`."
        ) from None


def tool_call_error_message(call: ToolCall) -> str:
    """What the agent reads back for a tool call that did not parse."""
    return (
        f"{PARSE_ERROR_PREFIX}: {call.error}. Write each tool call as "
        '<tool_call>{"name": "<tool name>", "arguments": {<JSON object>}}</tool_call>.'
    )
