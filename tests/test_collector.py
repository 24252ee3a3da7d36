"""The rollout collector keeps exactly the sampled tokens (docs/design.md), on the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
import random

import agent_env
import pytest
from agent_env import AgentEnv, Task, Workflow, WorkflowOutput
from agent_rl.embedded_model import embedded_model_dir
from agent_rl.engines.base import Completion, SamplingParams
from agent_rl.engines.hf import HFEngine
from agent_rl.rollout.collector import RolloutCollector, RolloutLimits
from agent_rl.rollout.tokens import TemplateRenderer
from agent_rl.rollout.trajectories import read_trajectories, write_trajectories
from transformers import AutoTokenizer

TASK = Task(main_query="What is 7 + 5?", task_id="t-add", metadata={"answer": "12"})
TOOL_CALL = '<tool_call>\n{"name": "execute_python_code", "arguments": {"code": "print(7 + 5)"}}\n</tool_call>'


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(embedded_model_dir())


class ScriptedEngine:
    """Plays fixed completions (their canonical tokenization + end of turn) and records every prompt it got."""

    max_model_len = 8192

    def __init__(self, tokenizer, texts, fail_on: str | None = None):
        self.tokenizer, self.texts, self.fail_on = tokenizer, list(texts), fail_on
        self.prompts: list[list[int]] = []
        self.completions: list[list[int]] = []

    async def generate(self, prompt_ids, params):
        if self.fail_on and self.fail_on in self.tokenizer.decode(prompt_ids):
            raise RuntimeError("engine failure for this prompt")
        text = self.texts[sum(1 for _ in self.prompts) % len(self.texts)] if len(self.texts) else ""
        ids = self.tokenizer.encode(text, add_special_tokens=False)[: params.max_tokens - 1] + [self.tokenizer.eos_token_id]
        finish = "stop"
        if len(ids) > params.max_tokens:
            ids, finish = ids[: params.max_tokens], "length"
        self.prompts.append(list(prompt_ids))
        self.completions.append(ids)
        return [Completion(ids, [-0.25] * len(ids), finish, self.tokenizer.decode(ids, skip_special_tokens=True))]


def collector(env_factory, engine, tokenizer, **kwargs) -> RolloutCollector:
    return RolloutCollector(env_factory, engine, tokenizer, SamplingParams(temperature=1.0, max_tokens=256), **kwargs)


async def test_multi_turn_tool_episode_decodes_to_the_conversation_the_agent_saw(tokenizer):
    engine = ScriptedEngine(tokenizer, [TOOL_CALL, "The answer is \\boxed{12}."])
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, tokenizer).collect([TASK], num_repeat=1)
    (episode,) = batch.episodes
    assert episode.error is None and episode.reward == 1.0 and episode.num_turns == 2
    (sample,) = episode.samples
    renderer = TemplateRenderer(tokenizer)
    conversation = tokenizer.apply_chat_template(sample.messages, tools=_math_tools(), chat_template=renderer.template, tokenize=False)
    decoded = tokenizer.decode(sample.prompt_ids + sample.response_ids)
    assert conversation.startswith(decoded) and conversation[len(decoded):].strip() == ""
    assert "<tool_response>" in decoded and "<stdout>12" in decoded


async def test_loss_mask_covers_exactly_the_sampled_tokens_end_of_turn_included(tokenizer):
    engine = ScriptedEngine(tokenizer, [TOOL_CALL, "\\boxed{12}"])
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, tokenizer).collect([TASK], num_repeat=1)
    (sample,) = batch.samples
    trained = [t for t, m in zip(sample.response_ids, sample.loss_mask, strict=True) if m]
    assert trained == engine.completions[0] + engine.completions[1]
    assert trained.count(tokenizer.eos_token_id) == 2
    assert [lp for lp, m in zip(sample.logprobs, sample.loss_mask, strict=True) if not m] == [0.0] * (len(sample.loss_mask) - len(trained))
    assert len(sample.logprobs) == len(sample.response_ids) == len(sample.loss_mask)


async def test_each_turn_prompt_extends_the_previous_sequence(tokenizer):
    engine = ScriptedEngine(tokenizer, [TOOL_CALL, "\\boxed{12}"])
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, tokenizer).collect([TASK], num_repeat=1)
    first, second = engine.prompts
    assert second[: len(first) + len(engine.completions[0])] == first + engine.completions[0]
    assert batch.metrics()["rollout/fallback_samples"] == 0


class ForgetfulAgent(Workflow):
    """Sends only the latest user message each time: its history is rewritten between calls."""

    async def execute(self, workflow_task, model_tuner):
        for question in ("first question", "second question"):
            await model_tuner([{"role": "user", "content": question}])
        return WorkflowOutput(reward=1.0)


async def test_history_rewrite_starts_a_new_sample_and_is_counted(tokenizer):
    engine = ScriptedEngine(tokenizer, ["ok"])
    batch = await collector(lambda: AgentEnv(ForgetfulAgent, None, None), engine, tokenizer).collect([TASK], num_repeat=2)
    assert batch.metrics()["rollout/fallback_samples"] == 2
    assert [s.sample_index for s in batch.samples] == [0, 1, 0, 1]
    assert all(s.reward == 1.0 and s.group_id == batch.samples[0].group_id for s in batch.samples)


async def test_response_budget_truncates_the_episode(tokenizer):
    engine = ScriptedEngine(tokenizer, [TOOL_CALL])
    limits = RolloutLimits(max_response_length=40, max_response_length_in_one_turn=30)
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0", truncation_reward=-1.0), engine, tokenizer, limits=limits).collect([TASK], 1)
    (episode,) = batch.episodes
    assert episode.termination_reason in ("response_truncated", "context_overflow") and episode.response_truncated
    assert episode.reward == -1.0 and len(episode.samples[0].response_ids) <= 40


async def test_prompt_longer_than_limit_is_context_overflow(tokenizer):
    engine = ScriptedEngine(tokenizer, ["hi"])
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, tokenizer, limits=RolloutLimits(max_prompt_length=20)).collect([TASK], 1)
    assert batch.episodes[0].termination_reason == "context_overflow" and batch.samples == []


async def test_a_failing_episode_does_not_take_down_the_batch(tokenizer):
    tasks = [TASK, Task(main_query="What is poison?", task_id="t-bad", metadata={"answer": "0"})]
    engine = ScriptedEngine(tokenizer, ["\\boxed{12}"], fail_on="poison")
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, tokenizer).collect(tasks, num_repeat=2)
    metrics = batch.metrics()
    assert metrics["rollout/failed_episodes"] == 2 and metrics["rollout/samples"] == 2
    assert {s.task_id for s in batch.samples} == {"t-add"}
    assert "engine failure" in batch.episodes[2].error


async def test_the_judges_reward_components_are_averaged_into_metrics(tokenizer):
    from agent_env.judges.last_number import LastNumberJudge

    # right and boxed, right but unboxed, wrong and boxed, wrong and unboxed
    engine = ScriptedEngine(tokenizer, ["So \\boxed{12}.", "It is 12", "\\boxed{13}", "13"])
    env = lambda: agent_env.make("agent_env/Completion-v0", judge=LastNumberJudge(format_weight=0.5))  # noqa: E731
    batch = await collector(env, engine, tokenizer, max_concurrency=1).collect([TASK], 4)
    assert sorted(e.reward_components["correct"] + 2 * e.reward_components["format"] for e in batch.episodes) == [0, 1, 2, 3]
    metrics = batch.metrics()
    assert metrics["reward/correct"] == 0.5 and metrics["reward/format"] == 0.5
    assert metrics["reward/mean"] == pytest.approx(0.75)


async def test_madness_nonsense_gets_the_madness_reward(tokenizer):
    engine = ScriptedEngine(tokenizer, ["\\boxed{12} " + "la " * 40])
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, tokenizer,
                            madness_checks=["nonsense", "wrong_toolcall"], madness_reward=-0.5).collect([TASK], 1)
    (episode,) = batch.episodes
    assert episode.madness == ["nonsense"] and episode.reward == -0.5


@pytest.mark.slow
async def test_hf_engine_with_smollm2_on_math_agent_tasks(tmp_path, tokenizer):
    engine = HFEngine(embedded_model_dir(), seed=0)
    tasks = agent_env.make("agent_env/MathAgent-v0").tasks[:2]
    limits = RolloutLimits(max_response_length=160, max_response_length_in_one_turn=48, max_prompt_length=1024)
    batch = await collector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, tokenizer, limits=limits).collect(tasks, num_repeat=2, seed=0)
    engine.close()
    assert len(batch.episodes) == 4 and all(e.error is None for e in batch.episodes)
    assert len({e.group_id for e in batch.episodes}) == 2
    for sample in batch.samples:
        assert len(sample.response_ids) == len(sample.loss_mask) == len(sample.logprobs) <= 160
        assert all(lp <= 0.0 for lp, m in zip(sample.logprobs, sample.loss_mask, strict=True) if m)
        assert sample.text == tokenizer.decode(sample.prompt_ids + sample.response_ids)
    path = write_trajectories(tmp_path / "trajectories" / "step_0.jsonl", batch.samples)
    rows = read_trajectories(path)
    assert len(rows) == len(batch.samples)
    required = {"task_id", "group_id", "episode_id", "sample_index", "prompt_ids", "response_ids", "loss_mask", "logprobs", "reward",
                "reward_components", "is_success", "termination_reason", "response_truncated", "messages", "text"}
    assert required <= set(rows[0]) and json.dumps(rows[0])
    assert batch.metrics()["tokens/generated"] > 0


def _math_tools():
    env = agent_env.make("agent_env/MathAgent-v0")
    obs, _ = env.reset(options={"task": TASK})
    env.close()
    return obs["tools"]


def test_repetition_loop_matches_its_definition_on_random_and_looping_sequences():
    from agent_rl.rollout.madness import is_repetition_loop

    def by_definition(ids, min_repeats=8, max_period=32):
        for period in range(1, max_period + 1):
            for start in range(len(ids) - period * min_repeats + 1):
                pattern = ids[start : start + period]
                if ids[start : start + period * min_repeats] == pattern * min_repeats:
                    return True
        return False

    rng = random.Random(0)
    cases = [[], [5], [7] * 7, [7] * 8, [1, 2] * 7 + [1], [1, 2] * 8, list(range(40)) * 2]
    for _ in range(300):
        period, repeats = rng.randint(1, 34), rng.randint(5, 9)
        pattern = [rng.randrange(4) for _ in range(period)]
        noise = lambda: [rng.randrange(50) for _ in range(rng.randint(0, 20))]  # noqa: E731
        cases.append(noise() + pattern * repeats + pattern[: rng.randint(0, period)] + noise())
    for ids in cases:
        assert is_repetition_loop(ids) == by_definition(ids), ids


def test_the_renderer_renders_a_groups_first_prompt_once_and_hands_out_copies(tokenizer, monkeypatch):
    from agent_rl.chat_template import render_prompt_ids
    from agent_rl.rollout import tokens

    renderer = TemplateRenderer(tokenizer)
    messages, tools = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": "What is 7 + 5?"}], _math_tools()
    expected = render_prompt_ids(tokenizer, renderer.template, messages, tools)
    calls = []
    monkeypatch.setattr(tokens, "render_prompt_ids", lambda *args: calls.append(args) or render_prompt_ids(*args))
    first = renderer.first_prompt_ids(messages, tools)
    first.append(-1)  # the collector extends its prompts: the cached ids must not change
    assert renderer.first_prompt_ids(messages, tools) == expected and len(calls) == 1
    assert renderer.first_prompt_ids(messages, []) != expected and len(calls) == 2  # other tools: another prompt
    monkeypatch.setattr(tokens, "PROMPT_CACHE_SIZE", 2)
    for n in range(3):
        renderer.first_prompt_ids([{"role": "user", "content": f"What is {n} + 1?"}], [])
    assert len(renderer._rendered) == 2
