"""Gymnasium spaces for chat: observations are conversations, actions are completions."""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium.spaces import Space

_ALPHABET = string.ascii_letters + string.digits + " .,"


class ConversationSpace(Space[dict]):
    """Observations `{"messages": [...], "tools": [...], "call_id": str}` (plus optional `tool_choice`,
    `response_format`): the request the workflow sent to the model, in OpenAI chat format."""

    def __init__(self, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        if not isinstance(x, dict) or not {"messages", "tools", "call_id"} <= x.keys():
            return False
        messages, tools = x["messages"], x["tools"]
        return (
            isinstance(messages, list)
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages)
            and isinstance(tools, list)
            and all(isinstance(t, dict) for t in tools)
            and isinstance(x["call_id"], str)
        )

    def sample(self, mask: Any = None, probability: Any = None) -> dict:
        text = "".join(self.np_random.choice(list(_ALPHABET), size=int(self.np_random.integers(1, 40))))
        return {"messages": [{"role": "user", "content": text}], "tools": [], "call_id": "call-1"}

    def __repr__(self) -> str:
        return "ConversationSpace()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConversationSpace)


class CompletionSpace(Space[Any]):
    """Actions: the assistant's completion as text, or an OpenAI assistant message dict."""

    def __init__(self, max_length: int = 64, seed: int | np.random.Generator | None = None) -> None:
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def contains(self, x: Any) -> bool:
        if isinstance(x, str):
            return True
        return isinstance(x, dict) and x.get("role", "assistant") == "assistant" and ("content" in x or "tool_calls" in x)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        length = int(self.np_random.integers(1, self.max_length + 1))
        return "".join(self.np_random.choice(list(_ALPHABET), size=length))

    def __repr__(self) -> str:
        return "CompletionSpace()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompletionSpace)
