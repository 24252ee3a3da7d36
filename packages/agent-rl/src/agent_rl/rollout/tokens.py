"""Token bookkeeping between turns (DESIGN §4): the next prompt is the previous one plus the sampled ids plus
the template's rendering of what came after — never a re-tokenization of what the model wrote."""

from __future__ import annotations

from typing import Any


class HistoryRewritten(Exception):
    """The agent's new prompt does not extend the previous one (it edited, dropped or reordered history, or the
    chat template renders earlier turns differently once later ones exist). The collector starts a new sample."""


class TemplateRenderer:
    """Renders conversations with a chat template and computes the tokens inserted between sampled turns.

    `end_of_turn` is the text that closes an assistant turn in this template (the tokenizer's EOS token for
    ChatML templates such as SmolLM2's and Qwen's, `<|im_end|>`).
    """

    def __init__(self, tokenizer: Any, chat_template: str | None = None, end_of_turn: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.end_of_turn = end_of_turn or tokenizer.eos_token
        if not self.end_of_turn:
            raise ValueError("The tokenizer has no eos_token; pass end_of_turn= (the text that closes an assistant turn).")
        self.end_of_turn_ids = tokenizer.encode(self.end_of_turn, add_special_tokens=False)

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=tools or None, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prompt_ids(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[int]:
        """The ids of a whole conversation, ending with the generation prompt of the next assistant turn."""
        return self.encode(self.render(messages, tools, add_generation_prompt=True))

    def continuation_ids(
        self,
        previous: list[dict[str, Any]],
        current: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        previous_tools: list[dict[str, Any]],
        sampled_end_of_turn: bool,
    ) -> list[int]:
        """Ids to append after the sampled completion so that the sequence renders `current`.

        `previous` is the conversation of the last model call; `current` must start with it, then hold the
        assistant message made of the sampled completion, then the new messages (tool results, user turns).
        Returned: the end-of-turn marker if the model did not sample it (cut by a length limit or a stop
        string), whatever the template writes after an assistant turn, the new messages and the next
        generation prompt. Raises `HistoryRewritten` where `current` does not extend `previous`.
        """
        n = len(previous)
        if tools != previous_tools or len(current) <= n or current[:n] != previous or current[n].get("role") != "assistant":
            raise HistoryRewritten
        before = self.render(current[: n + 1], tools, add_generation_prompt=False)
        after = self.render(current, tools, add_generation_prompt=True)
        if not after.startswith(before):
            raise HistoryRewritten
        closed_at = before.rfind(self.end_of_turn)
        if closed_at < 0:
            raise HistoryRewritten
        inserted = before[closed_at + len(self.end_of_turn):] + after[len(before):]
        ids = [] if sampled_end_of_turn else list(self.end_of_turn_ids)
        return ids + self.encode(inserted)

    def ends_turn(self, completion_ids: list[int]) -> bool:
        k = len(self.end_of_turn_ids)
        return k > 0 and completion_ids[-k:] == self.end_of_turn_ids
