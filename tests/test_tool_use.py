"""Tool use: counting tool calls, the perfect tool user on the calculator tasks, the token masks of its multi-turn
episodes, the tool-use reward (nothing about calling the tool earns credit by itself), `Learner.supervised_step`
on its demonstrations, and the trainer's cold start.

Everything runs for real: the math agent of `examples/tool_use/tool_use.yaml` (agentscope's ReActAgent with the
sandboxed python tool), `MathAnswerAsJudge`, the rollout collector, the SmolLM2 tokenizer and the built-in chat
template; policies (`policy(obs) -> text`) play the model's part through `ScriptedEngine`.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from agent_env.config import load_config
from agent_env.from_config import tasks_from_config
from agent_env.judges.answer_extraction import last_boxed
from agent_env.messages import ToolUse, tool_use
from agent_env.policies import python_tool_call, question_expression, scripted_math_policy
from agent_rl.embedded_model import embedded_model_dir
from agent_rl.engines.scripted import ScriptedEngine
from agent_rl.rollout.from_config import build_collector
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[1]
TOOL_USE_YAML = REPO / "examples" / "tool_use" / "tool_use.yaml"
END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(embedded_model_dir())


def tool_use_config(*overrides: str):
    """The tool-use example's config (math agent, calculator tasks, `MathAnswerAsJudge`), with `overrides`."""
    return load_config(TOOL_USE_YAML, list(overrides))


def validation_tasks(count: int) -> list:
    return list(tasks_from_config(tool_use_config(f"ajet.task_reader.arithmetic.num_validation={count}"), "validation"))


async def play(policy, tasks, tokenizer, config=None):
    """One episode of `policy` per task through the config's real env and the real collector."""
    collector = build_collector(config or tool_use_config(), ScriptedEngine(tokenizer, policy), tokenizer)
    try:
        return await collector.collect(tasks, 1)
    finally:
        collector.close()


class Recorder:
    """Wraps a policy; keeps every observation it answered and every completion it wrote."""

    def __init__(self, policy):
        self.policy, self.observations, self.completions = policy, [], []

    def __call__(self, obs):
        self.observations.append(obs)
        self.completions.append(self.policy(obs))
        return self.completions[-1]


def value_of(question: str) -> int:
    """The answer of a calculator question, by int arithmetic on its expression (digits and + * ** % only)."""
    expression = question_expression(question)
    assert set(expression) <= set("0123456789+*% "), expression
    return int(eval(expression))  # noqa: S307 - checked above: integer literals and arithmetic operators only


# ---------------------------------------------------------------- counting tool use


def _call(call_id: str, name: str = "execute_python_code", code: str = "print(1)") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps({"code": code})}}


def _result(call_id: str, content, name: str = "execute_python_code") -> dict:
    return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}


def test_tool_use_counts_calls_runs_parse_errors_and_failures():
    messages = [
        {"role": "system", "content": "Solve it."},
        {"role": "user", "content": "What is 7 + 5?"},
        # two calls in one turn: one ran (printed 12), one raised
        {"role": "assistant", "content": "", "tool_calls": [_call("a"), _call("b", code="print(1/0)")]},
        _result("a", "<returncode>0</returncode><stdout>12\n</stdout><stderr></stderr>"),
        _result("b", "<returncode>1</returncode><stdout></stdout><stderr>Traceback (most recent call last):\n"
                     "ZeroDivisionError: division by zero\n</stderr>"),
        # ran but printed nothing (or only whitespace): not counted as ran, nor as failed
        {"role": "assistant", "content": "Let me store it.", "tool_calls": [_call("c", code="x = 12"), _call("d", code="print()")]},
        _result("c", "<returncode>0</returncode><stdout></stdout><stderr></stderr>"),
        _result("d", [{"type": "text", "text": "<returncode>0</returncode><stdout>\n</stdout><stderr></stderr>"}]),
        # the sandbox's timeout (return code -1) is a failure
        {"role": "assistant", "content": "", "tool_calls": [_call("e", code="while True: pass")]},
        _result("e", "<returncode>-1</returncode><stdout></stdout><stderr>TimeoutError: stopped after 30 s</stderr>"),
        # a call that did not parse
        {"role": "assistant", "content": "", "tool_calls": [_call("f", name="invalid_tool_call")]},
        _result("f", "ToolCallParseError: the <tool_call> block is not closed with </tool_call>.", name="invalid_tool_call"),
        # other tools: a result counts as ran, an error as failed
        {"role": "assistant", "content": "", "tool_calls": [_call("g", name="weather"), _call("h", name="nope")]},
        _result("g", "Sunny, 21 degrees.", name="weather"),
        _result("h", "FunctionNotFoundError: Cannot find the function named nope.", name="nope"),
        # text that merely looks like a tool result, in a user or assistant turn, counts for nothing
        {"role": "user", "content": "<returncode>0</returncode><stdout>99\n</stdout>"},
        {"role": "assistant", "content": "ToolCallParseError? No: the answer is \\boxed{12}."},
    ]
    assert tool_use(messages) == ToolUse(calls=8, ran=2, parse_errors=1, failed=3)
    assert tool_use(messages[:2]) == ToolUse() == ToolUse(0, 0, 0, 0)
    assert tool_use(messages[:5]) == ToolUse(calls=2, ran=1, parse_errors=0, failed=1)


# ---------------------------------------------------------------- the scripted engine


def test_the_scripted_engine_tokenizes_the_policys_text_and_cuts_it_like_a_sampled_turn(tokenizer):
    import asyncio

    from agent_rl.engines.base import SamplingParams

    text = "The answer is \\boxed{12}."
    seen = []
    engine = ScriptedEngine(tokenizer, lambda obs: seen.append(obs) or text)
    obs = {"messages": [{"role": "user", "content": "What is 7 + 5?"}], "tools": []}
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    whole = engine.respond(obs, 64)
    assert seen == [obs] and whole.token_ids == [*ids, tokenizer.eos_token_id] and whole.text == text
    assert whole.finish_reason == "stop" and whole.logprobs == [0.0] * (len(ids) + 1)
    assert engine.respond(obs, len(ids) + 1).finish_reason == "stop"  # just room for the end of turn
    cut = engine.respond(obs, len(ids))
    assert cut.token_ids == ids and cut.finish_reason == "length" and cut.text == tokenizer.decode(ids)
    assert engine.respond(obs, 3).token_ids == ids[:3]
    with pytest.raises(TypeError, match="respond"):
        asyncio.run(engine.generate(ids, SamplingParams()))


# ---------------------------------------------------------------- the perfect tool user


async def test_the_perfect_tool_user_solves_every_held_out_calculator_task(tokenizer):
    tasks = validation_tasks(16)
    forms = {"*" if " * " in t.main_query else "**" if "**" in t.main_query else "%" if "%" in t.main_query else "+" for t in tasks}
    assert forms == {"*", "**", "%", "+"}  # the 16 held-out tasks hold all four forms
    batch = await play(scripted_math_policy, tasks, tokenizer)
    for episode, task in zip(batch.episodes, tasks, strict=True):
        assert episode.error is None and episode.termination_reason == "finished", episode.error
        assert episode.reward == 1.0 and episode.is_success and episode.num_turns == 2
        assert episode.reward_components == {"correct": 1.0, "boxed": 1.0, "unevaluated": 0.0, "timeout": 0.0}
        assert episode.tools == ToolUse(calls=1, ran=1, parse_errors=0, failed=0)
        (sample,) = episode.samples
        final = sample.messages[-1]
        assert final == {"role": "assistant", "content": f"The answer is \\boxed{{{task.metadata['answer']}}}."}
    metrics = batch.metrics()
    assert metrics["reward/success_rate"] == 1.0 and metrics["reward/mean"] == 1.0
    assert metrics["rollout/tool_call_rate"] == 1.0 and metrics["rollout/tool_ran_rate"] == 1.0
    assert metrics["rollout/tool_calls_per_episode"] == 1.0 and metrics["rollout/tool_failures_per_episode"] == 0.0
    assert metrics["rollout/turns_mean"] == 2.0 and metrics["rollout/failed_episodes"] == 0.0
    inserted = [len(s.response_ids) - sum(s.loss_mask) for s in batch.samples]
    assert min(inserted) > 0 and metrics["tokens/inserted_mean"] == pytest.approx(sum(inserted) / len(inserted))


# ---------------------------------------------------------------- multi-turn masks on a real episode


def _assistant_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns' content, each through its end-of-turn token."""
    spans, header, at = [], "<|im_start|>assistant\n", 0
    while (start := text.find(header, at)) != -1:
        begin = start + len(header)
        end = text.index(END, begin) + len(END)
        spans.append((begin, end))
        at = end
    return spans


def _runs(mask: list[int], value: int) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, bit in enumerate([*mask, 1 - value]):
        if bit == value and start is None:
            start = i
        elif bit != value and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("task_index", [0, 9], ids=["product", "sum"])
async def test_a_tool_episode_is_the_templates_rendering_and_the_mask_covers_exactly_the_policys_turns(tokenizer, task_index):
    from agent_rl.chat_template import HERMES_TOOLS_TEMPLATE

    task = validation_tasks(task_index + 1)[task_index]
    policy = Recorder(scripted_math_policy)
    config = tool_use_config()
    collector = build_collector(config, ScriptedEngine(tokenizer, policy), tokenizer)
    try:
        batch = await collector.collect([task], 1)
    finally:
        collector.close()
    (episode,) = batch.episodes
    assert episode.error is None and episode.reward == 1.0 and episode.num_turns == 2
    (sample,) = episode.samples
    template = collector.renderer.template
    assert template == HERMES_TOOLS_TEMPLATE  # SmolLM2's own template cannot render tools: the built-in one
    assert len(policy.observations) == 2 and policy.observations[0]["tools"] == policy.observations[1]["tools"]
    tools = policy.observations[-1]["tools"]
    assert [t["function"]["name"] for t in tools] == ["execute_python_code"]

    # the sequence is, token for token, the template's rendering of the final conversation (to its last end of turn)
    rendered = tokenizer.apply_chat_template(sample.messages, tools=tools, chat_template=template, tokenize=False)
    rendered = rendered[: rendered.rindex(END) + len(END)]
    encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
    sequence = sample.prompt_ids + sample.response_ids
    assert sequence == encoded["input_ids"]
    assert sample.text == rendered
    assert [m["role"] for m in sample.messages] == ["system", "user", "assistant", "tool", "assistant"]

    # the mask is 1 exactly on the tokens of the two assistant turns (end of turn included), 0 everywhere else
    spans = _assistant_spans(rendered)
    assert len(spans) == 2
    expected = []
    for begin, end in encoded["offset_mapping"]:
        assert not any(begin < edge < end for span in spans for edge in span), "a token straddles a turn boundary"
        expected.append(int(any(s <= begin and end <= e for s, e in spans)))
    mask = [0] * len(sample.prompt_ids) + sample.loss_mask
    assert mask == expected
    assert len(sample.loss_mask) == len(sample.response_ids) == len(sample.logprobs)
    assert sample.logprobs == [0.0] * len(sample.logprobs)  # nobody sampled these tokens

    # what is trained decodes to exactly what the policy wrote, each turn closed by the end-of-turn token
    trained = _runs(mask, 1)
    assert [tokenizer.decode(sequence[a:b]) for a, b in trained] == [c + END for c in policy.completions]
    assert [sequence[b - 1] for a, b in trained] == [tokenizer.eos_token_id] * 2 == [tokenizer.convert_tokens_to_ids(END)] * 2
    assert policy.completions[0] == python_tool_call(f"print({question_expression(task.main_query)})")
    assert policy.completions[1] == f"The answer is \\boxed{{{task.metadata['answer']}}}."

    # between the two turns: the template's markers and the tool's response, all inserted (mask 0)
    (_, first_end), (second_start, _) = trained
    between = tokenizer.decode(sequence[first_end:second_start])
    tool_output = sample.messages[3]["content"]
    assert tool_output == f"<returncode>0</returncode><stdout>{task.metadata['answer']}\n</stdout><stderr></stderr>"
    assert between == f"\n<|im_start|>tool\n<tool_response>\n{tool_output}\n</tool_response>{END}\n<|im_start|>assistant\n"
    assert _runs(sample.loss_mask, 0) == [(first_end - len(sample.prompt_ids), second_start - len(sample.prompt_ids))]
    assert episode.tools == ToolUse(1, 1, 0, 0) and batch.metrics()["tokens/inserted_mean"] == second_start - first_end


async def test_a_tool_call_with_non_ascii_code_is_written_as_the_template_renders_it(tokenizer):
    answer = 1600 * 1490
    policy = Recorder(lambda obs: f"\\boxed{{{answer}}}" if obs["messages"][-1]["role"] == "tool"
                      else python_tool_call('print("résultat:", 1600 * 1490)'))
    collector = build_collector(tool_use_config(), ScriptedEngine(tokenizer, policy), tokenizer)
    try:
        batch = await collector.collect(validation_tasks(1), 1)
    finally:
        collector.close()
    (sample,) = batch.samples
    assert sample.reward == 1.0
    rendered = tokenizer.apply_chat_template(sample.messages, tools=policy.observations[-1]["tools"],
                                             chat_template=collector.renderer.template, tokenize=False)
    assert sample.text == rendered[: rendered.rindex(END) + len(END)]


# ---------------------------------------------------------------- the tool-use reward cannot be gamed


def _turns(*scripts):
    """A policy that plays `scripts[k](expression, answer)` as its k-th turn (the last one for later turns)."""

    def policy(obs):
        question = next(m["content"] for m in obs["messages"] if m["role"] == "user")
        turn = sum(m["role"] == "assistant" for m in obs["messages"])
        return scripts[min(turn, len(scripts) - 1)](question_expression(question), value_of(question))

    return policy


def _calls(*codes):
    """A turn of one or more python tool calls (codes may use `{expression}` and `{answer}`)."""
    return lambda expression, answer: "\n".join(python_tool_call(code.format(expression=expression, answer=answer)) for code in codes)


def _say(text):
    return lambda expression, answer: text.format(expression=expression, answer=answer, wrong=answer + 1)


PRINT = "print({expression})"
BOXED = "The answer is \\boxed{{{answer}}}."

# name: (policy, reward it must get, tool use it must show: (calls, ran, failed) per episode)
REWARD_CASES = {
    "perfect": (_turns(_calls(PRINT), _say(BOXED)), 1.0, (1, 1, 0)),
    "no tool, right answer": (_turns(_say(BOXED)), 1.0, (0, 0, 0)),
    "no tool, wrong answer": (_turns(_say("\\boxed{{{wrong}}}")), 0.0, (0, 0, 0)),
    "tool raises, then wrong answer": (_turns(_calls("print(1/0)"), _say("The answer is \\boxed{{0}}.")), 0.0, (1, 0, 1)),
    "tool raises, then right answer": (_turns(_calls("print(1/0)"), _say(BOXED)), 1.0, (1, 0, 1)),
    "tool prints nothing, then wrong answer": (_turns(_calls("x = {expression}"), _say("\\boxed{{{wrong}}}")), 0.0, (1, 0, 0)),
    "tool prints nothing, then no answer": (_turns(_calls("x = {expression}"), _say("I computed x.")), 0.0, (1, 0, 0)),
    "tool prints nothing, then right answer": (_turns(_calls("x = {expression}"), _say(BOXED)), 1.0, (1, 0, 0)),
    "three right calls, then wrong answer": (_turns(_calls(PRINT, PRINT), _calls(PRINT), _say("\\boxed{{{wrong}}}")), 0.0, (3, 3, 0)),
    "three right calls, then no answer": (_turns(_calls(PRINT, PRINT), _calls(PRINT), _say("The tool printed it.")), 0.0, (3, 3, 0)),
    "three right calls, then right answer": (_turns(_calls(PRINT, PRINT), _calls(PRINT), _say(BOXED)), 1.0, (3, 3, 0)),
    "right tool output, then the number unboxed": (_turns(_calls(PRINT), _say("The answer is {answer}.")), 0.0, (1, 1, 0)),
    "boxed answer printed by the tool only": (_turns(_calls('print("\\\\boxed{{{answer}}}")'), _say("See the tool output.")), 0.0, (1, 1, 0)),
    "boxed answer in a turn's text before a call, then wrong": (
        _turns(lambda e, a: f"\\boxed{{{a}}}\n" + python_tool_call(f"print({e})"), _say("\\boxed{{{wrong}}}")), 0.0, (1, 1, 0)),
    "right answer hedged with a wrong one after it": (_turns(_calls(PRINT), _say("\\boxed{{{answer}}} or \\boxed{{{wrong}}}")), 0.0, (1, 1, 0)),
    "the number only in the last turn's tool call": (_turns(_calls(PRINT), _calls(PRINT), _calls("print({answer})")), 0.0, (3, 2, 0)),
    "the question restated in the box, no tool (math-verify would evaluate it)": (
        _turns(_say("The answer is \\boxed{{{expression}}}.")), 0.0, (0, 0, 0)),
    "the question restated in the box after the tool ran": (_turns(_calls(PRINT), _say("\\boxed{{{expression}}}")), 0.0, (1, 1, 0)),
    "the perfect tool user's turns with a wrong final answer": (lambda obs: scripted_math_policy(obs, wrong=True), 0.0, (1, 1, 0)),
}


@pytest.mark.parametrize(("policy", "reward", "tools"), list(REWARD_CASES.values()), ids=list(REWARD_CASES))
async def test_only_the_right_final_answer_earns_the_reward(tokenizer, policy, reward, tools):
    """No shaping: calling the tool (ran, raised, silent, repeated, printing the answer) earns nothing by itself;
    the reward is 1 exactly when the final answer's last `\\boxed{}` is right."""
    tasks = validation_tasks(2)  # `1600 * 1490` and `32 ** 5`
    batch = await play(policy, tasks, tokenizer)
    for episode, task in zip(batch.episodes, tasks, strict=True):
        assert episode.error is None and episode.termination_reason == "finished", episode.error
        # (the agent's third call, its summary after `max_iters`, comes without tools: a new sample starts there)
        sample = episode.samples[-1]
        final = sample.messages[-1]
        assert final["role"] == "assistant"
        right = last_boxed(final["content"] or "") == task.metadata["answer"]
        assert (episode.tools.calls, episode.tools.ran, episode.tools.failed) == tools, sample.messages
        assert episode.reward == reward and episode.is_success == (reward == 1.0), final
        assert episode.reward == float(right)  # the only way to 1: the right answer boxed, last, in the final answer
        assert episode.reward_components["correct"] == episode.reward


# ---------------------------------------------------------------- supervised steps on demonstrations


@pytest.fixture(scope="module")
def demonstrations(tokenizer):
    """The perfect tool user's samples on two held-out tasks (a product and a power), from the real collector."""
    import asyncio

    batch = asyncio.run(play(scripted_math_policy, validation_tasks(2), tokenizer))
    assert all(e.is_success for e in batch.episodes)
    return batch.samples


def _independent_nll(model, samples, which: str) -> float:
    """Mean negative log-likelihood under `model` (a plain transformers forward pass, untempered) of the response
    tokens with loss mask 1 (`which="trained"`) or of every response token (`which="all"`)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in samples:
            logits = model(torch.tensor([sample.prompt_ids + sample.response_ids])).logits[0].double()
            start = len(sample.prompt_ids) - 1  # position t predicts token t + 1
            logprobs = torch.log_softmax(logits[start : start + len(sample.response_ids)], dim=-1)
            picked = logprobs.gather(-1, torch.tensor(sample.response_ids)[:, None])[:, 0]
            keep = torch.tensor(sample.loss_mask, dtype=torch.bool) if which == "trained" else torch.ones(len(picked), dtype=torch.bool)
            total -= float(picked[keep].sum())
            count += int(keep.sum())
    return total / count


def _with_trailing_noise(samples, length: int = 24, seed: int = 0):
    """Copies whose responses end with `length` random tokens of loss mask 0: they are inputs only after every
    trained token, so only their role as (masked) targets could change the loss."""
    import copy

    rng = random.Random(seed)
    noisy = []
    for sample in samples:
        sample = copy.deepcopy(sample)
        sample.append([rng.randrange(100, 40000) for _ in range(length)], trained=False)
        noisy.append(sample)
    return noisy


def _weights(learner) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in learner.module.named_parameters()}


def _learner_tolerance(learner) -> float:
    """Relative tolerance between the learner's loss and a float32 transformers forward pass: bf16 weights or
    bf16 autocast round every matmul to 8 bits of mantissa (test_learner allows 1e-2 on a loss there); float32
    differs only by summation order and padding (1e-5)."""
    from agent_rl.learner.engine_setup import use_bf16

    return 1e-2 if use_bf16(learner.config) else 1e-5


@pytest.mark.slow
def test_supervised_step_is_the_nll_of_the_trained_tokens_and_leaves_the_schedule_alone(demonstrations, tmp_path):
    from agent_rl.learner import Learner, LearnerConfig
    from agent_rl.learner.engine_setup import use_bf16, use_bf16_autocast
    from transformers import AutoModelForCausalLM

    model_dir = embedded_model_dir()
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trained_nll, all_nll = _independent_nll(reference, demonstrations, "trained"), _independent_nll(reference, demonstrations, "all")
    del reference
    # two demonstrations of ~420 tokens, micro-batches of at most 600: two micro-batches, accumulated into one step
    config = LearnerConfig(lr=1e-4, warmup_steps=2, total_steps=10, max_tokens_per_micro_batch=600)
    learner = Learner(model_dir, config)  # precision: the machine's default (bf16 where the CPU has AMX/AVX512-BF16)
    dtype = next(learner.module.parameters()).dtype
    assert dtype == (torch.bfloat16 if use_bf16(config) and not use_bf16_autocast(config) else torch.float32)
    tolerance = _learner_tolerance(learner)
    assert abs(all_nll - trained_nll) > 20 * tolerance * trained_nll  # the check below can tell the two apart
    scheduled, epoch = learner.scheduler.get_last_lr(), learner.scheduler.last_epoch
    assert scheduled == [5e-5, 5e-5] and epoch == 0  # warm-up: lr / 2 at the first step

    # lr=0: a step that measures the loss at the initial weights and moves nothing (so `lr=` does reach the optimizer)
    before = _weights(learner)
    probe = learner.supervised_step(demonstrations, lr=0.0)
    assert all(torch.equal(before[n], p) for n, p in learner.module.named_parameters())
    assert probe["sft/loss"] == pytest.approx(trained_nll, rel=tolerance)
    assert probe["sft/trained_tokens"] == sum(sum(s.loss_mask) for s in demonstrations)
    assert probe["sft/grad_norm"] > 0 and probe["timing/sft/step_s"] > 0

    # targets with mask 0 do not count: extra masked tokens after the last trained one change neither loss nor gradient
    # (were they counted, the loss would be several times larger: random tokens cost ~15 nats each; in bf16 a longer
    # sequence changes the kernels' rounding, hence the dtype's tolerance; the float32 test below checks it tightly)
    noisy = learner.supervised_step(_with_trailing_noise(demonstrations), lr=0.0)
    assert noisy["sft/loss"] == pytest.approx(probe["sft/loss"], rel=tolerance)
    assert noisy["sft/grad_norm"] == pytest.approx(probe["sft/grad_norm"], rel=5 * tolerance)
    assert noisy["sft/trained_tokens"] == probe["sft/trained_tokens"]

    # the override was for those steps only: the scheduled lr trains now, the loss goes down, the schedule stays put
    losses = [learner.supervised_step(demonstrations)["sft/loss"] for _ in range(2)]
    now = learner.supervised_step(demonstrations, lr=0.0)["sft/loss"]  # the loss after the second update
    assert losses[0] == pytest.approx(probe["sft/loss"], rel=1e-6)  # the lr=0 steps had left the weights as they were
    assert losses[0] > losses[1] > now, (losses, now)
    assert not all(torch.equal(before[n], p) for n, p in learner.module.named_parameters())
    assert learner.scheduler.get_last_lr() == scheduled and learner.scheduler.last_epoch == epoch
    assert [g["lr"] for g in learner.optimizer.param_groups] == scheduled
    assert learner.step == 0  # GRPO's optimizer-step count (checkpoints, resume) is not advanced either

    # save_pretrained writes the fine-tuned weights: transformers loads a model that scores like the learner now
    saved = learner.save_pretrained(tmp_path / "sft")
    reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32)
    assert _independent_nll(reloaded, demonstrations, "trained") == pytest.approx(now, rel=tolerance)
    assert now < trained_nll * (1 - 5 * tolerance)
    assert AutoTokenizer.from_pretrained(saved).eos_token == END


@pytest.mark.slow
def test_supervised_step_in_float32_matches_the_transformers_nll_closely(demonstrations):
    from agent_rl.learner import Learner, LearnerConfig
    from transformers import AutoModelForCausalLM

    model_dir = embedded_model_dir()
    samples = demonstrations[:1]
    expected = _independent_nll(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), samples, "trained")
    learner = Learner(model_dir, LearnerConfig(bf16=False, lr=1e-4, weight_decay=0.0))
    assert next(learner.module.parameters()).dtype == torch.float32
    first = learner.supervised_step(samples, lr=0.0)
    assert first["sft/loss"] == pytest.approx(expected, rel=1e-5)
    noisy = learner.supervised_step(_with_trailing_noise(samples, length=40, seed=1), lr=0.0)
    assert noisy["sft/loss"] == pytest.approx(first["sft/loss"], rel=1e-6)
    assert noisy["sft/grad_norm"] == pytest.approx(first["sft/grad_norm"], rel=1e-5)

    # after a real supervised step AdamW holds momentum; once reset, a GRPO step whose every advantage is 0 (one
    # group, equal rewards) leaves every weight exactly as it was (no weight decay here): the cold start's momentum
    # does not leak into GRPO
    learner.supervised_step(samples)
    learner.reset_optimizer_state()
    before = [p.detach().clone() for p in learner.module.parameters()]
    group = [replace(samples[0], episode_id=f"e{i}", reward=1.0) for i in range(2)]
    learner.train_step(group)
    assert all(torch.equal(b, p) for b, p in zip(before, learner.module.parameters(), strict=True))


# ---------------------------------------------------------------- the trainer's cold start

COLD_START = [
    "ajet.model.path=embedded:tiny-random-SmolLM2",  # the cold start's mechanics, fast: SmolLM2's tokenizer
    "ajet.task_reader.arithmetic.num_train=16",
    "ajet.task_reader.arithmetic.num_validation=2",
    "ajet.data.train_batch_size=1",
    "ajet.rollout.num_repeat=2",
    "ajet.rollout.max_response_length_in_one_turn=64",  # room for the longest demonstration turn (a 5-term sum)
    "ajet.cold_start.num_tasks=4",
    "ajet.cold_start.epochs=2",
    "ajet.cold_start.batch_size=4",
    "ajet.cold_start.lr=1.0e-3",
    "ajet.trainer_common.logger=[console]",
]

ANSWER_ZERO = '''
def answer_zero(obs):
    return "The answer is \\\\boxed{0}."
'''


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_trainers_cold_start_fine_tunes_on_the_policys_demonstrations(tmp_path, tokenizer, worker_port_base, monkeypatch):
    import agent_rl

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 41))
    config = tool_use_config(*COLD_START)
    assert config.ajet.cold_start.policy == "agent_env.policies:scripted_math_policy"
    run_dir = tmp_path / "run"
    agent_rl.train(config, run_dir, max_steps=1)
    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == [0, 1]
    zero = rows[0]
    assert zero["cold_start/episodes"] == 4 and zero["cold_start/demonstrations"] == 4
    assert zero["cold_start/policy_success_rate"] == 1.0
    assert zero["sft/steps"] == 2  # 2 epochs of one batch of 4
    assert zero["sft/loss_last"] < zero["sft/loss_first"]  # the same 4 demonstrations, one step later
    assert zero["timing/cold_start_s"] > 0 and "val/accuracy" in zero  # the validation before training follows it
    assert not any(key.startswith(("cold_start/", "sft/")) for key in rows[1])
    assert rows[1]["learner/lr"] == config.ajet.learner.lr  # GRPO's first step: its own lr, not the cold start's

    demonstrations = [json.loads(line) for line in (run_dir / "trajectories" / "cold_start.jsonl").read_text().splitlines()]
    assert len(demonstrations) == 4
    train_questions = {t.main_query for t in tasks_from_config(config, "train")}
    for row in demonstrations:
        assert row["is_success"] and row["reward"] == 1.0 and row["num_turns"] == 2
        question = row["messages"][1]["content"]
        assert question in train_questions
        sequence, mask = row["prompt_ids"] + row["response_ids"], [0] * len(row["prompt_ids"]) + row["loss_mask"]
        turns = [tokenizer.decode(sequence[a:b]) for a, b in _runs(mask, 1)]
        answer = value_of(question)
        assert turns == [python_tool_call(f"print({question_expression(question)})") + END, f"The answer is \\boxed{{{answer}}}.{END}"]
    assert len({row["task_id"] for row in demonstrations}) == 4


def test_a_cold_start_policy_that_solves_nothing_stops_the_run_and_names_the_policy(tmp_path, worker_port_base, monkeypatch):
    import agent_rl

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 43))
    policy_file = tmp_path / "answer_zero.py"
    policy_file.write_text(ANSWER_ZERO)
    reference = f"{policy_file}:answer_zero"
    config = tool_use_config(*COLD_START, f"ajet.cold_start.policy={reference}", "ajet.trainer_common.val_before_train=false")
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="solved none of its episodes") as error:
        agent_rl.train(config, run_dir, max_steps=1)
    assert repr(reference) in str(error.value) and "trajectories/cold_start.jsonl" in str(error.value)
    rows = [json.loads(line) for line in (run_dir / "trajectories" / "cold_start.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and not any(r["is_success"] for r in rows)
    assert all(r["messages"][-1]["content"] == "The answer is \\boxed{0}." and r["num_turns"] == 1 for r in rows)


def test_without_a_policy_there_is_no_cold_start(tmp_path, worker_port_base, monkeypatch):
    from agent_env.config.schema import ColdStartConfig
    from agent_rl.trainer import Trainer

    defaults = ColdStartConfig()
    assert (defaults.policy, defaults.num_tasks, defaults.epochs, defaults.batch_size, defaults.lr) == (None, 64, 2, 16, None)
    math_agent = load_config(REPO / "examples" / "math_agent" / "math_agent.yaml")
    assert math_agent.ajet.cold_start == defaults  # a config without the block has no cold start

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 45))
    config = tool_use_config(*COLD_START, "ajet.cold_start.policy=null", "ajet.trainer_common.val_before_train=false")
    trainer = Trainer(config, tmp_path / "run")
    try:
        trainer._before_first_step()
    finally:
        trainer.close()
    assert not (tmp_path / "run" / "trajectories" / "cold_start.jsonl").exists()
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists() or metrics.read_text() == ""  # nothing logged at step 0


@pytest.mark.parametrize(("reference", "message"), [
    ("agent_env.policies:scripted_math_polcy", r"agent_env\.policies has no attribute 'scripted_math_polcy'.*scripted_math_policy"),
    ("agent_env.policys:scripted_math_policy", r"module 'agent_env\.policys' cannot be imported"),
    ("no_such_file.py->policy", r"file 'no_such_file\.py' not found"),
])
def test_a_bad_policy_reference_is_a_clear_error(tokenizer, reference, message):
    import asyncio

    from agent_env.loading import LoadError
    from agent_rl.cold_start import collect_demonstrations

    config = tool_use_config(f"ajet.cold_start.policy={reference}")
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(LoadError, match=message):
            collect_demonstrations(config, tokenizer, validation_tasks(1), loop)
    finally:
        loop.close()


def test_a_malformed_policy_reference_fails_when_the_config_loads():
    from agent_env.config import ConfigError

    with pytest.raises(ConfigError, match="cold_start.policy"):
        tool_use_config("ajet.cold_start.policy=scripted_math_policy")
