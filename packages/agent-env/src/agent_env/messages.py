"""Chat messages in OpenAI format: normalising what agent frameworks send, and rendering for people."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agent_env.tool_call_format import PARSE_ERROR_PREFIX

_KEEP_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name")


def content_text(content: Any) -> str:
    """The text of a message's `content`, whether a string or a list of parts (`{"type": "text", "text": ...}`)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                if "text" in part:
                    texts.append(str(part["text"]))
                elif part.get("type") in ("image_url", "image", "audio", "input_audio", "video"):
                    texts.append(f"[{part.get('type')}]")
        return "".join(texts)
    return str(content)


def normalize_message(message: dict[str, Any]) -> dict[str, Any]:
    """One message in plain OpenAI chat format: string `content`; `name` kept only on tool messages.

    Agent frameworks differ in details that do not reach the model (agentscope's OpenAI formatter sends content
    as a list of text parts and a `name` on every message; its DashScope formatter sends strings). Normalising
    makes observations identical whichever formatter the agent uses.
    """
    role = message.get("role")
    if role is None:
        raise ValueError(f"A chat message needs a 'role'; got keys {sorted(message)}.")
    out: dict[str, Any] = {"role": role, "content": content_text(message.get("content"))}
    if message.get("tool_calls"):
        out["tool_calls"] = [_normalize_tool_call(call) for call in message["tool_calls"]]
    if role == "tool":
        if "tool_call_id" in message:
            out["tool_call_id"] = message["tool_call_id"]
        if message.get("name"):
            out["name"] = message["name"]
    return out


def _normalize_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function", {})
    arguments = function.get("arguments", "{}")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"id": call.get("id", ""), "type": "function", "function": {"name": function.get("name", ""), "arguments": arguments}}


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [normalize_message(message) for message in messages]


def render_conversation(messages: list[dict[str, Any]], width: int = 100) -> str:
    """A plain-text transcript, used by `render_mode="ansi"` and debug printing."""
    lines = []
    for message in messages:
        header = f"── {message['role']}" + (f" ({message['name']})" if message.get("name") else "") + " "
        lines.append(header + "─" * max(0, width - len(header)))
        if message.get("content"):
            lines.append(str(message["content"]))
        for call in message.get("tool_calls", []) or []:
            lines.append(f"→ {call['function']['name']}({call['function']['arguments']})")
    return "\n".join(lines) + "\n"


_PYTHON_RESULT = re.compile(r"<returncode>(-?\d+)</returncode><stdout>(.*)</stdout><stderr>(.*)</stderr>", re.DOTALL)
_ERROR_NAME = re.compile(r"\w*(Error|Exception)\b")


@dataclass(frozen=True)
class PythonRun:
    """A python tool's result (`<returncode>..</returncode><stdout>..</stdout><stderr>..</stderr>`), split."""

    returncode: int
    stdout: str
    stderr: str


def python_run(text: str) -> PythonRun | None:
    """`text` as the python tool's result, or None when it is not one."""
    found = _PYTHON_RESULT.fullmatch(text.strip())
    return None if found is None else PythonRun(int(found.group(1)), found.group(2), found.group(3))


def is_parse_error(text: str) -> bool:
    """Whether a tool result says the call did not parse (the env's `ToolCallParseError` result)."""
    return text.lstrip().startswith(PARSE_ERROR_PREFIX)


def names_an_error(text: str) -> bool:
    """Whether a tool result starts with an error's name (`FunctionNotFoundError: ...`, `ValueError ...`)."""
    return _ERROR_NAME.match(text.lstrip()) is not None


@dataclass(frozen=True)
class ToolUse:
    """What the tools did in one conversation, counted from its messages.

    calls: tool calls the assistant wrote (parsed or not).
    ran: tool results that show the tool ran and gave something back: for the python tool (`python_run`), return
        code 0 and non-empty stdout; for other tools, any result that is not an error.
    parse_errors: results saying the call did not parse (`is_parse_error`).
    failed: results of calls that parsed but failed: a python run with a non-zero return code (an exception, a
        timeout, a sandbox limit), or another tool's error (`names_an_error`, e.g. `FunctionNotFoundError`).
    """

    calls: int = 0
    ran: int = 0
    parse_errors: int = 0
    failed: int = 0


def tool_use(messages: list[dict[str, Any]]) -> ToolUse:
    """Count the tool calls in `messages` and what came of them (see `ToolUse`)."""
    calls = sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")
    ran = parse_errors = failed = 0
    for message in messages:
        if message.get("role") != "tool":
            continue
        text = content_text(message.get("content"))
        run = python_run(text)
        if is_parse_error(text):
            parse_errors += 1
        elif run is not None:
            failed += run.returncode != 0
            ran += run.returncode == 0 and bool(run.stdout.strip())
        elif names_an_error(text):
            failed += 1
        else:
            ran += 1
    return ToolUse(calls, ran, parse_errors, failed)
