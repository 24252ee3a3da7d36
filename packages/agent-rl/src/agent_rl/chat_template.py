"""Chat templates for token-exact multi-turn rollouts: template choice, prompt ids and template-suffix ids.

The collector renders a conversation's first prompt with `render_prompt_ids`. After the model's turn it
appends the sampled ids as they are, then `render_suffix_ids` for what the environment added (tool results,
user turns) up to the next assistant header. That needs a *prefix-preserving* template: rendering a longer
conversation must start with the rendering of the shorter one. Where it does not (a template that rewrites
earlier turns, or an agent that rewrote its history), `NotPrefixPreserving` is raised and the collector
starts a new sample instead of re-tokenizing.

Templates without tool support (SmolLM2's ignores `tools` and fails on tool calls) get `HERMES_TOOLS_TEMPLATE`,
a ChatML template with Hermes-style tools, the format `agent_env.HermesToolCallFormat` parses.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Message = Mapping[str, Any]
"""An OpenAI-format chat message: `role`, `content`, and for assistants optionally `tool_calls`."""

HERMES_TOOLS_NAME = "hermes-tools"

HERMES_TOOLS_TEMPLATE = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- elif content is mapping -%}{{- content.text if content.text is defined else '' -}}"
    "{%- elif content is iterable -%}"
    "{%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}"
    "{%- elif content is not none -%}{{- content -}}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set system_text = render_content(messages[0].content) -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_text = '' -%}"
    "{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if system_text -%}{{- system_text + '\\n\\n' -}}{%- endif -%}"
    "{{- '# Tools\\n\\nYou can call the functions whose JSON signatures are listed inside <tools></tools>:\\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nTo call a function, write a JSON object with its name and arguments inside "
    '<tool_call></tool_call> tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": '
    "<arguments-json-object>}\\n</tool_call><|im_end|>\\n' -}}"
    "{%- elif messages and messages[0].role == 'system' -%}"
    "{{- '<|im_start|>system\\n' + system_text + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message.role == 'assistant' -%}"
    "{%- set content = render_content(message.content) -%}"
    "{{- '<|im_start|>assistant\\n' + content -}}"
    "{%- for call in (message.tool_calls or []) -%}"
    "{%- set function = call.function if call.function is defined else call -%}"
    "{%- set arguments = function.arguments if function.arguments is defined else {} -%}"
    "{%- if content or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>\\n{\"name\": ' + (function.name | tojson) + ', \"arguments\": ' -}}"
    "{%- if arguments is string -%}{{- arguments -}}{%- else -%}{{- arguments | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- elif message.role == 'tool' -%}"
    "{{- '<|im_start|>tool\\n<tool_response>\\n' + render_content(message.content) + "
    "'\\n</tool_response><|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message.role + '\\n' + render_content(message.content) + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""ChatML (`<|im_start|>role\\n...<|im_end|>\\n`) with Hermes-style tools.

- Tools: listed as JSON, one per line, inside `<tools></tools>` in the system turn (after the system
  message's own text, if any).
- Assistant tool calls: after the content, each as `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`
  on its own line; string arguments are written as they are, objects as JSON.
- Tool results: one `tool` turn per message, `<tool_response>\\n...\\n</tool_response>`.
- Content may be a string, None, or a list of OpenAI content parts (text parts are joined).
- No default system prompt is inserted. Each turn renders the same whatever follows it, so the template is
  prefix-preserving.
"""

_CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "agent_rl_probe_tool",
        "description": "Checks whether a chat template renders tools.",
        "parameters": {"type": "object", "properties": {"probe_argument": {"type": "string"}}},
    },
}
_PROBE_MESSAGES = [
    {"role": "user", "content": "Call the tool."},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {
                    "name": "agent_rl_probe_tool",
                    "arguments": {"probe_argument": "agent_rl_probe_value"},
                },
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_0",
        "name": "agent_rl_probe_tool",
        "content": "agent_rl_probe_result",
    },
]


class NotPrefixPreserving(ValueError):
    """Rendering the longer conversation does not extend the rendering of the shorter one.

    The collector counts this as a fallback and starts a new training sample for the turn.
    """


def get_chat_template(tokenizer: PreTrainedTokenizerBase, override: str | None = None) -> str:
    """The Jinja chat template to render conversations with tools.

    override: None picks the tokenizer's own template if it renders tools, tool calls and tool results,
        else the built-in `HERMES_TOOLS_TEMPLATE`; `"hermes-tools"` picks the built-in; a path to a file
        reads the template from it; any other text containing Jinja markup (`{{` or `{%`) is the template.
    Raises ValueError when the built-in is needed but the tokenizer has no ChatML special tokens, or when
    `override` is none of the above.
    """
    if override is not None:
        if override == HERMES_TOOLS_NAME:
            return _checked_builtin(tokenizer)
        if "{{" in override or "{%" in override:
            return override
        path = Path(override).expanduser()
        if path.is_file():
            return path.read_text()
        raise ValueError(
            f"chat_template override {override!r} is not {HERMES_TOOLS_NAME!r}, not a file that exists, and not "
            "Jinja text (no '{{' or '{%'). Give the built-in's name, a path to a .jinja file, or the template text."
        )
    own = tokenizer.chat_template
    if isinstance(own, Mapping):  # some tokenizers carry named templates
        own = own.get("tool_use") or own.get("default")
    if own and template_supports_tools(tokenizer, own):
        return own
    return _checked_builtin(tokenizer)


def template_supports_tools(tokenizer: PreTrainedTokenizerBase, template: str) -> bool:
    """Whether `template` renders tool schemas, assistant tool calls (with their arguments) and tool results."""
    try:
        with_tools = _render(tokenizer, template, _PROBE_MESSAGES, [_PROBE_TOOL], add_generation_prompt=True)
        schema_only = _render(
            tokenizer, template, _PROBE_MESSAGES[:1], [_PROBE_TOOL], add_generation_prompt=True
        )
    except Exception:  # a template that cannot take tool messages at all (e.g. `None + str`)
        return False
    return (
        "agent_rl_probe_tool" in schema_only
        and "agent_rl_probe_value" in with_tools
        and "agent_rl_probe_result" in with_tools
    )


def render_prompt_ids(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> list[int]:
    """Token ids of `messages` rendered with `template`, ending with the generation prompt of the next assistant turn."""
    return _encode(tokenizer, _render(tokenizer, template, messages, tools, add_generation_prompt=True))


def render_suffix_ids(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    prev_messages: Sequence[Message],
    new_messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    end_of_turn_ids: Collection[int] | None = None,
    include_end_of_turn: bool = False,
) -> list[int]:
    """Token ids the template adds after the model's last turn: `new_messages` plus the next generation prompt.

    `prev_messages` must end with an assistant message: the turn the model sampled, ending with an
    end-of-turn token (`end_of_turn_ids`, default the tokenizer's EOS id). The result is what follows that
    token in the rendering of `prev_messages + new_messages` with the generation prompt, so that
    `render_prompt_ids(prev_messages[:-1]) + sampled_ids + render_suffix_ids(...)` is the token sequence of
    the whole conversation (exactly, when the model's sampled ids are the canonical tokenization).

    include_end_of_turn: start the suffix with the end-of-turn token itself, for a turn whose sampled ids
        lack it (cut off by `max_tokens`).
    Raises NotPrefixPreserving when the longer rendering does not start with the shorter one (as text or as
    tokens up to the end-of-turn token), or when the last assistant turn renders without an end-of-turn token.
    """
    if not prev_messages or prev_messages[-1].get("role") != "assistant":
        raise ValueError(
            "render_suffix_ids needs prev_messages that end with the assistant turn the model sampled; "
            f"the last message has role {prev_messages[-1].get('role') if prev_messages else None!r}."
        )
    messages = [*prev_messages, *new_messages]
    prefix_text = _render(tokenizer, template, prev_messages, tools, add_generation_prompt=False)
    full_text = _render(tokenizer, template, messages, tools, add_generation_prompt=True)
    if not full_text.startswith(prefix_text):
        at = next(
            (i for i, (a, b) in enumerate(zip(prefix_text, full_text, strict=False)) if a != b),
            len(full_text),
        )
        raise NotPrefixPreserving(
            f"The chat template renders the {len(prev_messages)} earlier messages differently once "
            f"{len(new_messages)} more are added (first difference at character {at}: "
            f"{prefix_text[at : at + 40]!r} vs {full_text[at : at + 40]!r})."
        )
    prefix_ids = _encode(tokenizer, prefix_text)
    full_ids = _encode(tokenizer, full_text)
    end_ids = set(end_of_turn_ids) if end_of_turn_ids is not None else {tokenizer.eos_token_id}
    end_at = next((i for i in range(len(prefix_ids) - 1, -1, -1) if prefix_ids[i] in end_ids), None)
    if end_at is None:
        raise NotPrefixPreserving(
            f"The rendered assistant turn holds no end-of-turn token (ids {sorted(end_ids)}), so the sampled ids "
            "cannot be joined to the template's suffix; pass end_of_turn_ids or use a template that closes turns."
        )
    cut = end_at if include_end_of_turn else end_at + 1
    if full_ids[: end_at + 1] != prefix_ids[: end_at + 1]:
        raise NotPrefixPreserving(
            "The longer rendering tokenizes differently before the last end-of-turn token, although its text "
            "extends the shorter one."
        )
    return full_ids[cut:]


def _render(
    tokenizer: PreTrainedTokenizerBase,
    template: str,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None,
    add_generation_prompt: bool,
) -> str:
    return tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        tools=list(tools) if tools else None,
        chat_template=template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # The rendered text already holds every special token the template wants (BOS included, if any).
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _checked_builtin(tokenizer: PreTrainedTokenizerBase) -> str:
    missing = [
        token
        for token in _CHATML_TOKENS
        if _encode(tokenizer, token) != [tokenizer.convert_tokens_to_ids(token)]
    ]
    if missing:
        raise ValueError(
            f"The built-in {HERMES_TOOLS_NAME!r} chat template uses ChatML markers, but the tokenizer "
            f"{getattr(tokenizer, 'name_or_path', '')!r} has no special token for {', '.join(missing)}, and its own "
            "template does not render tools. Set `chat_template` to a Jinja template (text or a file path) that "
            "renders `tools`, assistant `tool_calls` and `tool` messages for this model."
        )
    return HERMES_TOOLS_TEMPLATE
