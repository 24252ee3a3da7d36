"""An episode as turns: each model call's message, its tool calls with their results, and its tokens.

A turn is one model call. In the conversation it is an assistant message and the messages after it up to the
next assistant message (its tool results, a message the agent added). In the tokens it is a maximal run of
trained tokens (loss mask 1: sampled by the model) and the inserted tokens after it (loss mask 0: the chat
template's closing and opening tokens and the tool output), until the next run. The two are paired in order.
"""

from __future__ import annotations

import json
from typing import Any

from agent_env.messages import content_text, is_parse_error, names_an_error, python_run
from agent_env.policies import PYTHON_TOOL

__all__ = ["PYTHON_TOOL", "conversation_turns", "episode_turns", "number_turns", "tool_counts"]



# ------------------------------------------------------------------ tokens


def number_turns(samples: list[dict[str, Any]]) -> list[list[int]]:
    """The turn (1, 2, ...) of each response token of each sample; the count goes on from one sample to the next.

    A turn starts at a sample's first token and wherever a trained token follows an inserted one.
    """
    numbers: list[list[int]] = []
    turn = 0
    for sample in samples:
        mask = sample.get("loss_mask", [])
        sample_numbers = []
        for i, trained in enumerate(mask):
            if i == 0 or (trained and not mask[i - 1]):
                turn += 1
            sample_numbers.append(turn)
        numbers.append(sample_numbers)
    return numbers


def _token_turns(samples: list[dict[str, Any]], numbers: list[list[int]]) -> list[dict[str, Any]]:
    """Per turn: the sample its tokens are in, how many were trained and inserted, and the length of the sample's
    prompt when the turn opens a sample after the first (the collector started a new one: the agent's history
    no longer extended the previous sequence)."""
    turns: dict[int, dict[str, Any]] = {}
    for position, (sample, sample_numbers) in enumerate(zip(samples, numbers, strict=True)):
        for i, (trained, turn) in enumerate(zip(sample.get("loss_mask", []), sample_numbers, strict=True)):
            counts = turns.setdefault(turn, {
                "sample_index": int(sample.get("sample_index", position)),
                "trained_tokens": 0,
                "inserted_tokens": 0,
                "new_sample_prompt_tokens": len(sample.get("prompt_ids", [])) if i == 0 and position > 0 else None,
            })
            counts["trained_tokens" if trained else "inserted_tokens"] += 1
    return list(turns.values())


# ------------------------------------------------------------------ messages


def conversation_turns(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The messages before the first assistant message (system prompt, task), and one turn per assistant message:
    `{"assistant", "tool_calls", "messages"}`, each tool call with its result (None when none came back) and
    `messages` the other messages up to the next assistant message."""
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), len(messages))
    turns: list[dict[str, Any]] = []
    for message in messages[first:]:
        if message.get("role") == "assistant":
            turns.append({"assistant": message, "tool_calls": [_tool_call(call) for call in message.get("tool_calls") or []],
                          "messages": []})
            continue
        call = _call_answered_by(turns[-1]["tool_calls"], message) if message.get("role") == "tool" else None
        if call is None:
            turns[-1]["messages"].append(message)
        else:
            call["result"] = _tool_result(content_text(message.get("content")))
    return messages[:first], turns


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A call as shown: its name, its arguments (parsed when they are JSON) and, for the python tool, its code."""
    function = call.get("function") or call
    name = str(function.get("name", ""))
    arguments = _parse_json(function.get("arguments", {}))
    code = None
    if name == PYTHON_TOOL and isinstance(arguments, dict) and isinstance(arguments.get("code"), str):
        arguments = dict(arguments)
        code = arguments.pop("code")
    return {"id": call.get("id"), "name": name, "code": code, "arguments": arguments, "result": None}


def _parse_json(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


def _call_answered_by(calls: list[dict[str, Any]], message: dict[str, Any]) -> dict[str, Any] | None:
    """The call a tool message answers: the one of its `tool_call_id`, or without an id the first still unanswered."""
    waiting = [call for call in calls if call["result"] is None]
    call_id = message.get("tool_call_id")
    if not call_id:
        return waiting[0] if waiting else None
    return next((call for call in waiting if call["id"] == call_id), None)


def _tool_result(text: str) -> dict[str, Any]:
    """A tool's result text, classified: `status` is `ok`, `error` (a python run with a non-zero return code, or a
    result naming an error) or `parse_error`; a python result also has `returncode`, `stdout` and `stderr`."""
    run = python_run(text)
    if run is not None:
        return {"status": "ok" if run.returncode == 0 else "error", "text": text,
                "returncode": run.returncode, "stdout": run.stdout, "stderr": run.stderr}
    if is_parse_error(text):
        return {"status": "parse_error", "text": text}
    return {"status": "error" if names_an_error(text) else "ok", "text": text}


def tool_counts(turns: list[dict[str, Any]]) -> dict[str, int]:
    """How many tool calls the turns hold and what came of them: `ran` (a python return code 0, or another tool's
    result that is no error), `failed`, `parse_errors` and `unanswered` (no result came back)."""
    results = [call["result"] for turn in turns for call in turn["tool_calls"]]
    statuses = [result["status"] if result else None for result in results]
    return {"calls": len(results), "ran": statuses.count("ok"), "failed": statuses.count("error"),
            "parse_errors": statuses.count("parse_error"), "unanswered": statuses.count(None)}


# ------------------------------------------------------------------ both


def episode_turns(samples: list[dict[str, Any]], numbers: list[list[int]]) -> dict[str, Any]:
    """The episode's final conversation (the last sample's `messages`) as turns, each with its token counts.

    Returns `prompt_messages`, `turns` (`{"turn", "assistant", "tool_calls", "messages", "tokens"}`; `assistant`
    or `tokens` is None where one side has more turns than the other) and `turns_note` (why the two sides do
    not pair up, or None).
    """
    prompt_messages, message_turns = conversation_turns(samples[-1].get("messages") or [])
    token_turns = _token_turns(samples, numbers)
    turns = [{"turn": i + 1, "assistant": None, "tool_calls": [], "messages": [],
              **(message_turns[i] if i < len(message_turns) else {}),
              "tokens": token_turns[i] if i < len(token_turns) else None}
             for i in range(max(len(message_turns), len(token_turns)))]
    note = None
    if len(message_turns) != len(token_turns):
        note = (f"the conversation holds {len(message_turns)} assistant messages but the tokens {len(token_turns)} "
                "turns: they are paired in order")
    return {"prompt_messages": prompt_messages, "turns": turns, "turns_note": note}
