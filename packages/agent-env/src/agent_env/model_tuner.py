"""`ModelTuner`: the workflow's only door to the LLM. Each call is handed to whoever drives the env.

It is an agentscope `ChatModelBase`, so `ReActAgent(model=model_tuner, ...)` works (tool calls and structured
output included), and `as_openai_client()` gives the same door to agents written against the OpenAI SDK.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agentscope.message import TextBlock, ToolUseBlock
from agentscope.model import ChatModelBase, ChatResponse

from agent_env.messages import normalize_messages
from agent_env.tool_call_format import ParsedCompletion


class EpisodeClosed(Exception):
    """Raised inside a workflow that calls the model after its episode ended (truncated, timed out or closed)."""


@dataclass
class ModelRequest:
    """One model call made by the workflow, as the policy sees it."""

    call_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None
    """JSON schema the reply must follow (agentscope's `structured_model`), else None."""
    sampling: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments of the call (e.g. `temperature`), passed on to engines that honour them."""
    reply: asyncio.Future | None = None


@dataclass
class AssistantReply:
    """The policy's answer to a `ModelRequest`: the parsed completion plus the raw text."""

    parsed: ParsedCompletion
    text: str

    @property
    def message(self) -> dict[str, Any]:
        return self.parsed.to_message()


class ModelCallChannel:
    """Where a workflow's model calls wait for the env's `step`. One per episode, first-in first-out."""

    def __init__(self) -> None:
        self.pending: deque[ModelRequest] = deque()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.step_rewards: list[float] = []
        self._count = 0

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def call(self, request: ModelRequest) -> AssistantReply:
        if self.closed:
            raise EpisodeClosed("The episode has ended; no more model calls are answered.")
        request.reply = asyncio.get_running_loop().create_future()
        self.pending.append(request)
        self.wake()
        return await request.reply

    def next_call_id(self) -> str:
        self._count += 1
        return f"call-{self._count}"

    def close(self) -> None:
        """Fail every waiting call with `EpisodeClosed` and refuse new ones."""
        self.closed = True
        while self.pending:
            request = self.pending.popleft()
            if request.reply is not None and not request.reply.done():
                request.reply.set_exception(EpisodeClosed("The episode has ended."))


class ModelTuner(ChatModelBase):
    """The LLM handle given to `Workflow.execute`.

    Calling it (as agentscope agents do: `await model(messages, tools=..., tool_choice=..., structured_model=...)`)
    suspends the workflow until the env's driver answers with `env.step(action)`.
    """

    def __init__(self, channel: ModelCallChannel, model_name: str = "agent-env-policy") -> None:
        super().__init__(model_name=model_name, stream=False)
        self._channel = channel

    async def __call__(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        structured_model: Any = None,
        **kwargs: Any,
    ) -> ChatResponse:
        response_format = structured_model.model_json_schema() if structured_model is not None else None
        request = ModelRequest(
            call_id=self._channel.next_call_id(),
            messages=normalize_messages(messages),
            tools=list(tools or []),
            tool_choice=tool_choice,
            response_format=response_format,
            sampling=kwargs,
        )
        reply = await self._channel.call(request)
        return _chat_response(reply, structured_model)

    def add_reward(self, value: float) -> None:
        """Give a per-step reward; it is added to the reward returned by the env's next `step`."""
        self._channel.step_rewards.append(float(value))

    def as_openai_client(self) -> OpenAICompatibleClient:
        """An object answering `await client.chat.completions.create(messages=..., tools=...)` like `openai.AsyncOpenAI`."""
        return OpenAICompatibleClient(self._channel, self.model_name)


def _chat_response(reply: AssistantReply, structured_model: Any) -> ChatResponse:
    blocks: list[Any] = []
    if reply.parsed.content:
        blocks.append(TextBlock(type="text", text=reply.parsed.content))
    for call in reply.parsed.tool_calls:
        block = ToolUseBlock(type="tool_use", id=call.id, name=call.name, input=call.arguments, raw_input=call.raw)
        if call.error:
            block["parse_error"] = call.error  # read by the toolkit hook in agentscope_hooks.py
        blocks.append(block)
    metadata = _structured_output(reply, structured_model) if structured_model is not None else None
    return ChatResponse(content=blocks, metadata=metadata)


def _structured_output(reply: AssistantReply, structured_model: Any) -> dict[str, Any] | None:
    """The reply as the structured model's fields: the first tool call's arguments, or JSON in the text."""
    candidates: list[Any] = [call.arguments for call in reply.parsed.tool_calls if not call.error]
    text = reply.parsed.content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        candidates.append(json.loads(text))
    except json.JSONDecodeError:
        pass
    for candidate in candidates:
        try:
            return structured_model.model_validate(candidate).model_dump()
        except Exception:  # noqa: BLE001 - any validation failure means "not this candidate"
            continue
    return None


class _Completions:
    def __init__(self, channel: ModelCallChannel, model_name: str) -> None:
        self._channel = channel
        self._model_name = model_name

    async def create(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: Any = None,
        model: str | None = None,
        response_format: Any = None,
        **kwargs: Any,
    ) -> Any:
        from openai.types.chat import ChatCompletion

        if isinstance(tool_choice, dict):
            tool_choice = tool_choice.get("function", {}).get("name")
        schema = None
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema", {}).get("schema")
        request = ModelRequest(
            call_id=self._channel.next_call_id(),
            messages=normalize_messages(messages),
            tools=list(tools or []),
            tool_choice=tool_choice,
            response_format=schema,
            sampling=kwargs,
        )
        reply = await self._channel.call(request)
        message = reply.message
        finish_reason = "tool_calls" if message.get("tool_calls") else "stop"
        return ChatCompletion.model_validate(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model or self._model_name,
                "choices": [{"index": 0, "finish_reason": finish_reason, "message": {**message, "content": message["content"] or None}}],
            }
        )


class _Chat:
    def __init__(self, channel: ModelCallChannel, model_name: str) -> None:
        self.completions = _Completions(channel, model_name)


class OpenAICompatibleClient:
    """A stand-in for `openai.AsyncOpenAI` whose `chat.completions.create` is answered by the env's driver."""

    def __init__(self, channel: ModelCallChannel, model_name: str) -> None:
        self.chat = _Chat(channel, model_name)
