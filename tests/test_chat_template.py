"""Chat templates on SmolLM2's real tokenizer: tool rendering, prompt ids, prefix-preserving suffix ids."""

from __future__ import annotations

import json

import pytest
from agent_rl.chat_template import (
    HERMES_TOOLS_TEMPLATE,
    NotPrefixPreserving,
    get_chat_template,
    render_prompt_ids,
    render_suffix_ids,
    template_supports_tools,
)
from agent_rl.embedded_model import embedded_model_dir
from transformers import AutoTokenizer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    }
]


def call(call_id: str, expression: str) -> dict:
    arguments = json.dumps({"expression": expression})
    return {"id": call_id, "type": "function", "function": {"name": "calculate", "arguments": arguments}}


CONVERSATION = [
    {"role": "system", "content": "Solve the problem with the tool. Put the answer in \\boxed{}."},
    {"role": "user", "content": "What is (12 + 30) * 2?"},
    {"role": "assistant", "content": "First the sum.", "tool_calls": [call("c0", "12 + 30")]},
    {"role": "tool", "tool_call_id": "c0", "content": "42"},
    {"role": "assistant", "content": None, "tool_calls": [call("c1", "42 * 2"), call("c2", "84 / 1")]},
    {"role": "tool", "tool_call_id": "c1", "content": "84"},
    {"role": "tool", "tool_call_id": "c2", "content": "84.0"},
    {"role": "user", "content": "Now give the final answer."},
    {"role": "assistant", "content": "The answer is \\boxed{84}."},
]
ASSISTANT_TURNS = [i for i, m in enumerate(CONVERSATION) if m["role"] == "assistant"]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="module")
def template(tokenizer):
    return get_chat_template(tokenizer)


def canonical_completion_ids(tokenizer, template, messages, index) -> list[int]:
    """The ids a model would sample for assistant turn `index`: its rendering up to and including <|im_end|>."""
    before = tokenizer.apply_chat_template(
        messages[:index], tools=TOOLS, chat_template=template, tokenize=False, add_generation_prompt=True
    )
    through = tokenizer.apply_chat_template(
        messages[: index + 1], tools=TOOLS, chat_template=template, tokenize=False
    )
    turn = through[len(before) :]
    assert turn.endswith("<|im_end|>\n")
    return tokenizer(turn.removesuffix("\n"), add_special_tokens=False)["input_ids"]


def test_smollm2_template_lacks_tools_so_the_builtin_is_chosen(tokenizer, template):
    assert not template_supports_tools(tokenizer, tokenizer.chat_template)
    assert template == HERMES_TOOLS_TEMPLATE
    assert template_supports_tools(tokenizer, template)


def test_a_tokenizer_template_with_tool_support_is_kept(tokenizer):
    own = HERMES_TOOLS_TEMPLATE + "{#- the model's own template -#}"
    original = tokenizer.chat_template
    tokenizer.chat_template = own
    try:
        assert get_chat_template(tokenizer) == own
    finally:
        tokenizer.chat_template = original


def test_overrides_by_name_text_and_path(tokenizer, tmp_path):
    assert get_chat_template(tokenizer, "hermes-tools") == HERMES_TOOLS_TEMPLATE
    text = "{% for m in messages %}{{ m.content }}{% endfor %}"
    assert get_chat_template(tokenizer, text) == text
    path = tmp_path / "template.jinja"
    path.write_text(text)
    assert get_chat_template(tokenizer, str(path)) == text
    with pytest.raises(ValueError, match="not 'hermes-tools', not a file that exists, and not Jinja text"):
        get_chat_template(tokenizer, "hermes")


def test_builtin_needs_chatml_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(ValueError, match=r"no special token for <\|im_start\|>, <\|im_end\|>"):
        get_chat_template(plain)


def test_assistant_message_with_content_and_tool_calls_renders_hermes_blocks(tokenizer, template):
    text = tokenizer.apply_chat_template(
        CONVERSATION[:5], tools=TOOLS, chat_template=template, tokenize=False
    )
    assert text.endswith(
        "<|im_start|>user\nWhat is (12 + 30) * 2?<|im_end|>\n"
        "<|im_start|>assistant\nFirst the sum.\n"
        '<tool_call>\n{"name": "calculate", "arguments": {"expression": "12 + 30"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>tool\n<tool_response>\n42\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "calculate", "arguments": {"expression": "42 * 2"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "calculate", "arguments": {"expression": "84 / 1"}}\n</tool_call><|im_end|>\n'
    )
    assert text.startswith(
        "<|im_start|>system\nSolve the problem with the tool. Put the answer in \\boxed{}.\n\n# Tools\n\n"
    )
    assert '\n<tools>\n{"type": "function", "function": {"name": "calculate", ' in text


def test_dict_arguments_and_content_parts_render_like_strings(tokenizer, template):
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Add "}, {"type": "text", "text": "them."}]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1}}}],
        },
    ]
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    assert text == (
        "<|im_start|>user\nAdd them.<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call><|im_end|>\n'
    )


def test_no_tools_and_no_system_message_renders_plain_chatml(tokenizer, template):
    ids = render_prompt_ids(tokenizer, template, [{"role": "user", "content": "Hi"}])
    assert tokenizer.decode(ids) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_end_of_turn_token_is_im_end_and_closes_every_assistant_turn(tokenizer, template):
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == im_end == 2
    for index in ASSISTANT_TURNS:
        assert canonical_completion_ids(tokenizer, template, CONVERSATION, index)[-1] == im_end


def test_prompt_plus_sampled_ids_plus_suffixes_equals_the_whole_rendered_conversation(tokenizer, template):
    first = ASSISTANT_TURNS[0]
    sequence = render_prompt_ids(tokenizer, template, CONVERSATION[:first], TOOLS)
    for turn, index in enumerate(ASSISTANT_TURNS):
        sequence += canonical_completion_ids(tokenizer, template, CONVERSATION, index)
        if turn + 1 < len(ASSISTANT_TURNS):
            following = ASSISTANT_TURNS[turn + 1]
            suffix = render_suffix_ids(
                tokenizer, template, CONVERSATION[: index + 1], CONVERSATION[index + 1 : following], TOOLS
            )
            assert tokenizer.decode(suffix).startswith("\n<|im_start|>")
            assert tokenizer.decode(suffix).endswith("<|im_start|>assistant\n")
            sequence += suffix
            # each turn's prompt is exactly the rendering of the conversation so far
            assert sequence == render_prompt_ids(tokenizer, template, CONVERSATION[:following], TOOLS)
    whole = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, chat_template=template, tokenize=False)
    assert sequence == tokenizer(whole.removesuffix("\n"), add_special_tokens=False)["input_ids"]


def test_suffix_for_a_turn_cut_off_before_its_end_token_starts_with_it(tokenizer, template):
    suffix = render_suffix_ids(
        tokenizer, template, CONVERSATION[:3], CONVERSATION[3:4], TOOLS, include_end_of_turn=True
    )
    assert suffix[0] == tokenizer.eos_token_id
    assert suffix[1:] == render_suffix_ids(tokenizer, template, CONVERSATION[:3], CONVERSATION[3:4], TOOLS)


def test_a_template_that_rewrites_earlier_turns_raises_not_prefix_preserving(tokenizer):
    last_turn_marked = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if loop.last %}(latest) {% endif %}"
        "{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(NotPrefixPreserving, match="first difference at character"):
        render_suffix_ids(
            tokenizer, last_turn_marked, CONVERSATION[7:9], [{"role": "user", "content": "Thanks"}]
        )


def test_a_template_without_an_end_of_turn_token_raises_not_prefix_preserving(tokenizer):
    no_end = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
    with pytest.raises(NotPrefixPreserving, match="no end-of-turn token"):
        render_suffix_ids(tokenizer, no_end, CONVERSATION[7:9], [{"role": "user", "content": "Thanks"}])


def test_suffix_needs_the_conversation_to_end_with_the_sampled_turn(tokenizer, template):
    with pytest.raises(ValueError, match="end with the assistant turn"):
        render_suffix_ids(tokenizer, template, CONVERSATION[:2], CONVERSATION[2:3], TOOLS)
