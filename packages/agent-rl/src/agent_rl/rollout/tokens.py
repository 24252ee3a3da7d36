"""Token bookkeeping between turns (docs/design.md, "Tokens across turns"): the next prompt is the previous one plus the sampled ids plus
the template's rendering of what came after — never a re-tokenization of what the model wrote."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from agent_rl.chat_template import (
    NotPrefixPreserving,
    get_chat_template,
    render_prompt_ids,
    render_suffix_ids,
)

PROMPT_CACHE_SIZE = 1024
"""First prompts a renderer keeps rendered (a batch's tasks, each rendered once for all of its episodes)."""


class HistoryRewritten(Exception):
    """The agent's new prompt does not extend the previous one (it edited, dropped or reordered history, changed
    its tools, or the template renders earlier turns differently once later ones exist). The collector starts
    a new sample and counts it."""


class TemplateRenderer:
    """A tokenizer and the chat template it renders with (the tokenizer's own if it handles tools, else the
    built-in Hermes template, or the YAML's `model.chat_template` override)."""

    def __init__(self, tokenizer: Any, chat_template: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.template = get_chat_template(tokenizer, chat_template)
        self.end_of_turn_id = tokenizer.eos_token_id
        self._rendered: OrderedDict[str, tuple[int, ...]] = OrderedDict()  # a first conversation as JSON → its ids

    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        """The ids of a whole conversation, ending with the generation prompt of the next assistant turn."""
        return render_prompt_ids(self.tokenizer, self.template, messages, tools)

    def first_prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        """`prompt_ids` of an episode's first conversation. The episodes of a group start from the same one, so the
        last `PROMPT_CACHE_SIZE` are kept rendered (keyed by their JSON, key order included, which the template
        may render)."""
        try:
            key = json.dumps([messages, tools], ensure_ascii=False)
        except (TypeError, ValueError):  # content that is not plain JSON (objects of the agent's own): no cache
            return self.prompt_ids(messages, tools)
        ids = self._rendered.get(key)
        if ids is None:
            ids = self._rendered[key] = tuple(self.prompt_ids(messages, tools))
            if len(self._rendered) > PROMPT_CACHE_SIZE:
                self._rendered.popitem(last=False)
        else:
            self._rendered.move_to_end(key)
        return list(ids)

    def continuation_ids(
        self,
        previous: list[dict[str, Any]],
        current: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        previous_tools: list[dict[str, Any]],
        sampled_end_of_turn: bool,
    ) -> list[int]:
        """Ids to append after the sampled completion so that the sequence renders `current`.

        `previous` is the conversation of the last model call; `current` must hold it unchanged, then the
        assistant message made of the sampled completion, then the new messages (tool results, user turns).
        The ids start with the end-of-turn token when the model did not sample it (a length limit cut it).
        """
        n = len(previous)
        if tools != previous_tools or len(current) <= n or current[:n] != previous or current[n].get("role") != "assistant":
            raise HistoryRewritten
        try:
            return render_suffix_ids(self.tokenizer, self.template, current[: n + 1], current[n + 1:], tools,
                                     include_end_of_turn=not sampled_end_of_turn)
        except NotPrefixPreserving as error:
            raise HistoryRewritten from error

    def ends_turn(self, completion_ids: list[int]) -> bool:
        return bool(completion_ids) and completion_ids[-1] == self.end_of_turn_id
