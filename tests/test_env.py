"""AgentEnv's contract, driven by scripted policies through the sync and async APIs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import agent_env
import gymnasium
import pytest
from agent_env import AgentEnv, Task, TerminationReason, Workflow, WorkflowOutput
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from scripted import ChatLoop, EchoJudge, Raises

TASK = Task(main_query="What is 7 + 5?", task_id="t-add", metadata={"answer": "12"})


def tool_call(name: str, **arguments) -> str:
    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'


class RaisingJudge:
    def compute_reward(self, workflow_task, workflow_output):
        raise KeyError("answer")


def math_env(**kwargs) -> AgentEnv:
    return agent_env.make("agent_env/MathAgent-v0", **kwargs)


# ----------------------------------------------------------------- the tutorial's math agent, step by step


def test_python_tool_call_then_correct_boxed_answer_gets_reward_one():
    env = math_env()
    obs, info = env.reset(options={"task": TASK})
    assert obs["messages"][0]["role"] == "system" and "\\boxed{}" in obs["messages"][0]["content"]
    assert obs["messages"][-1] == {"role": "user", "content": "What is 7 + 5?"}
    assert [tool["function"]["name"] for tool in obs["tools"]] == ["execute_python_code"]
    assert "timeout" not in obs["tools"][0]["function"]["parameters"]["properties"]

    obs, reward, terminated, truncated, info = env.step("Let me compute.\n" + tool_call("execute_python_code", code="print(7 + 5)"))
    assert (reward, terminated, truncated, info["turn"]) == (0.0, False, False, 1)
    assistant, tool_result = obs["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["function"]["name"] == "execute_python_code"
    assert tool_result["role"] == "tool" and "12" in tool_result["content"]

    obs, reward, terminated, truncated, info = env.step("The answer is \\boxed{12}.")
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["is_success"] is True and info["termination_reason"] == "finished"
    env.close()


def test_wrong_answer_gets_reward_zero():
    env = math_env()
    env.reset(options={"task": TASK})
    _, reward, terminated, _, info = env.step("\\boxed{13}")
    assert (reward, terminated, info["is_success"]) == (0.0, True, False)


def test_malformed_tool_call_reaches_the_agent_as_an_error_and_the_episode_goes_on():
    env = math_env()
    env.reset(options={"task": TASK})
    obs, reward, terminated, truncated, info = env.step('<tool_call>{"name": "execute_python_code", "arguments": {"code": </tool_call>')
    assert not terminated and not truncated
    assert info["tool_call_errors"] == 1
    tool_result = obs["messages"][-1]
    assert tool_result["role"] == "tool" and tool_result["content"].startswith("ToolCallParseError: the tool call is not valid JSON")
    _, reward, terminated, _, _ = env.step("\\boxed{12}")
    assert terminated and reward == 1.0


def test_unknown_tool_is_counted_and_reported_to_the_agent():
    env = math_env()
    env.reset(options={"task": TASK})
    obs, *_, info = env.step(tool_call("calculator", expression="7+5"))
    assert info["tool_call_errors"] == 1
    assert "FunctionNotFoundError" in obs["messages"][-1]["content"]


def test_react_agent_hitting_max_turns_is_truncated_without_judging():
    env = math_env(max_turns=2, truncation_reward=-0.5)
    env.reset(options={"task": TASK})
    call = tool_call("execute_python_code", code="print(1)")
    env.step(call)
    obs, reward, terminated, truncated, info = env.step(call)
    assert (terminated, truncated, reward) == (False, True, -0.5)
    assert info["termination_reason"] == "max_turns" and info["is_success"] is False


def test_max_episode_steps_and_max_turns_count_the_same_steps():
    own = agent_env.make("agent_env/Workflow-v0", workflow=ChatLoop, judge=EchoJudge(), tasks=[TASK], max_episode_steps=2)
    wrapped = gymnasium.make("agent_env/Workflow-v0", workflow=ChatLoop, judge=EchoJudge(), tasks=[TASK], max_episode_steps=2)
    for env in (own, wrapped):
        env.reset(seed=0)
        assert env.step("a")[3] is False
        _, _, terminated, truncated, info = env.step("b")
        assert truncated and not terminated
    assert info.get("termination_reason") is None  # Gymnasium's TimeLimit cut it from outside
    own.reset(seed=0)
    own.step("a")
    assert own.step("b")[4]["termination_reason"] == "max_turns"


# ----------------------------------------------------------------- every termination reason


def _run(env: AgentEnv, actions):
    env.reset(options={"task": TASK})
    for action in actions:
        result = env.step(action)
        if result[2] or result[3]:
            return result
    raise AssertionError("episode did not end")


def test_finished_with_per_step_rewards_and_judge_components():
    env = AgentEnv(ChatLoop, EchoJudge(), [TASK])
    rewards = []
    env.reset(seed=0)
    for action in ["x", "y", "12"]:
        _, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
    assert rewards[:2] == [pytest.approx(0.1), pytest.approx(0.1)]
    assert rewards[2] == pytest.approx(1.1)
    assert info["reward_components"] == {"contains_answer": 1.0} and info["termination_reason"] == "finished"


def test_raising_workflow_ends_with_workflow_error_and_configured_reward():
    env = AgentEnv(Raises, EchoJudge(), [TASK], workflow_error_reward=-1.0)
    _, reward, terminated, truncated, info = _run(env, ["hello"])
    assert (reward, terminated, truncated) == (-1.0, True, False)
    assert info["termination_reason"] == "workflow_error" and "ValueError: boom in the workflow" in info["error"]


def test_raising_judge_ends_with_judge_error():
    env = AgentEnv(ChatLoop, RaisingJudge(), [TASK], judge_error_reward=-0.25)
    _, reward, terminated, _, info = _run(env, ["a", "b", "c"])
    assert (reward, terminated, info["termination_reason"]) == (pytest.approx(-0.25 + 0.1), True, "judge_error")
    assert "KeyError" in info["error"]


def test_workflow_slower_than_episode_timeout_is_truncated():
    class Slow(Workflow):
        async def execute(self, workflow_task, model_tuner):
            await model_tuner([{"role": "user", "content": "hi"}])
            await asyncio.sleep(30)
            return WorkflowOutput(reward=1.0)

    env = AgentEnv(Slow, None, [TASK], episode_timeout_s=0.2)
    _, reward, terminated, truncated, info = _run(env, ["a"])
    assert truncated and not terminated and info["termination_reason"] == "timeout" and reward == 0.0


def test_prompt_longer_than_limit_is_context_overflow():
    def count_chars(request):
        return sum(len(m["content"]) for m in request.messages)

    env = AgentEnv(ChatLoop, EchoJudge(), [TASK], max_prompt_tokens=40, count_tokens=count_chars)
    _, _, terminated, truncated, info = _run(env, ["a" * 50, "b"])
    assert truncated and info["termination_reason"] == "context_overflow"


def test_driver_can_truncate_for_response_length():
    env = AgentEnv(ChatLoop, EchoJudge(), [TASK], truncation_reward=-0.1)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.truncate("response_truncated")
    assert truncated and not terminated and reward == -0.1 and info["termination_reason"] == "response_truncated"
    with pytest.raises(ValueError, match="truncating reason"):
        env.reset(seed=0)
        env.truncate("finished")


def test_every_termination_reason_is_covered_by_a_test():
    covered = {"finished", "workflow_error", "judge_error", "max_turns", "timeout", "context_overflow", "response_truncated"}
    assert covered == {reason.value for reason in TerminationReason}


def test_step_after_end_tells_to_reset():
    env = AgentEnv(ChatLoop, EchoJudge(), [TASK])
    _run(env, ["a", "b", "c"])
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("again")


def test_workflow_without_model_calls_ends_on_first_step():
    class NoCalls(Workflow):
        async def execute(self, workflow_task, model_tuner):
            return WorkflowOutput(reward=0.5, is_success=True)

    env = AgentEnv(NoCalls, None, [TASK])
    obs, _ = env.reset(seed=0)
    assert obs == {"messages": [], "tools": [], "call_id": ""}
    _, reward, terminated, _, info = env.step("anything")
    assert terminated and reward == 0.5 and info["is_success"] is True


# ----------------------------------------------------------------- concurrency and the async API


def test_gathered_model_calls_queue_first_in_first_out():
    class TwoAgents(Workflow):
        async def execute(self, workflow_task, model_tuner):
            async def ask(name):
                reply = await model_tuner([{"role": "user", "content": name}])
                return reply.content[0]["text"]

            answers = await asyncio.gather(ask("first"), ask("second"))
            return WorkflowOutput(reward=float(answers == ["to first", "to second"]))

    env = AgentEnv(TwoAgents, None, [TASK])
    obs, info = env.reset(seed=0)
    assert obs["messages"][0]["content"] == "first" and info["pending_calls"] == 1
    obs, _, _, _, info = env.step("to first")
    assert obs["messages"][0]["content"] == "second" and info["pending_calls"] == 0
    _, reward, terminated, _, _ = env.step("to second")
    assert terminated and reward == 1.0


async def test_200_concurrent_episodes_on_one_event_loop():
    async def play(index: int) -> float:
        env = AgentEnv(ChatLoop, EchoJudge(), [TASK])
        await env.areset(seed=index)
        done, total = False, 0.0
        actions = iter(["x", "y", "12" if index % 2 else "no"])
        while not done:
            _, reward, terminated, truncated, _ = await env.astep(next(actions))
            total += reward
            done = terminated or truncated
        await env.aclose()
        return total

    import threading

    threads_before = threading.active_count()
    totals = await asyncio.gather(*(play(i) for i in range(200)))
    # no thread per episode: only the loop's default executor, bounded, where the sync judge runs
    assert threading.active_count() <= threads_before + 2 + min(32, (os.cpu_count() or 1) + 4)
    assert sorted(set(round(t, 6) for t in totals)) == [0.3, 1.3]
    assert sum(1 for t in totals if t > 1) == 100


class BlockingJudge:
    """A sync judge that blocks (as a slow library call would) for `seconds`."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def compute_reward(self, workflow_task, workflow_output):
        time.sleep(self.seconds)
        return 1.0, True


async def test_a_blocking_sync_judge_times_out_without_holding_the_loop():
    """`time.sleep` in a sync judge: its episode ends with `judge_error` after `judge_timeout_s`, while an episode
    beside it on the same loop finishes (the judge runs in a worker thread, not on the loop)."""
    blocked = AgentEnv(ChatLoop, BlockingJudge(3.0), [TASK], judge_timeout_s=0.5, judge_error_reward=-1.0)
    quick = AgentEnv(ChatLoop, EchoJudge(), [TASK])

    async def play(env):
        await env.areset(seed=0)
        for action in ("x", "y", "12"):
            _, reward, terminated, _, info = await env.astep(action)
        assert terminated
        return reward, info, time.monotonic()

    started = time.monotonic()
    (blocked_reward, blocked_info, blocked_end), (quick_reward, quick_info, quick_end) = await asyncio.gather(play(blocked), play(quick))
    assert blocked_info["termination_reason"] == "judge_error" and blocked_reward == pytest.approx(-1.0 + 0.1)  # + the step's reward
    assert "TimeoutError" in blocked_info["error"]
    assert quick_info["termination_reason"] == "finished" and quick_info["is_success"]
    assert quick_end - started < 0.5 <= blocked_end - started < 2.5  # bounded by the timeout, not the 3 s sleep


async def test_sync_api_works_inside_a_running_event_loop():
    env = AgentEnv(ChatLoop, EchoJudge(), [TASK])
    obs, _ = env.reset(seed=0)  # called from a coroutine, as in Jupyter
    _, _, _, _, info = env.step("x")
    assert info["turn"] == 1
    env.close()


async def test_mixing_event_loops_is_refused_with_advice():
    env = AgentEnv(ChatLoop, EchoJudge(), [TASK])
    await env.areset(seed=0)
    with pytest.raises(RuntimeError, match="continues with astep"):
        env.step("x")
    await env.aclose()


async def test_close_cancels_a_running_workflow():
    cancelled = asyncio.Event()

    class Waits(Workflow):
        async def execute(self, workflow_task, model_tuner):
            try:
                await model_tuner([{"role": "user", "content": "hi"}])
            finally:
                cancelled.set()
            return WorkflowOutput(reward=1.0)

    env = AgentEnv(Waits, None, [TASK])
    await env.areset(seed=0)
    await env.aclose()
    assert cancelled.is_set()
    await env.aclose()


# ----------------------------------------------------------------- actions, observations, agents


def test_structured_assistant_message_is_accepted_as_action():
    env = math_env()
    env.reset(options={"task": TASK})
    action = {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "execute_python_code", "arguments": json.dumps({"code": "print(3*4)"})}}]}
    obs, *_ = env.step(action)
    assert obs["messages"][-1]["role"] == "tool" and "12" in obs["messages"][-1]["content"]


def test_react_agent_structured_output_through_model_tuner():
    from pydantic import BaseModel

    class Answer(BaseModel):
        value: int

    class Structured(Workflow):
        async def execute(self, workflow_task, model_tuner):
            from agentscope.agent import ReActAgent
            from agentscope.formatter import OpenAIChatFormatter
            from agentscope.message import Msg

            agent = ReActAgent(name="a", sys_prompt="Answer.", model=model_tuner, formatter=OpenAIChatFormatter())
            agent.set_console_output_enabled(False)
            reply = await agent.reply(Msg("user", "7+5?", "user"), structured_model=Answer)
            return WorkflowOutput(reward=float(reply.metadata == {"value": 12}))

    env = AgentEnv(Structured, None, [TASK])
    obs, _ = env.reset(seed=0)
    assert obs["tool_choice"] == "required" and "generate_response" in [t["function"]["name"] for t in obs["tools"]]
    obs, *_ = env.step(tool_call("generate_response", value=12))
    _, reward, terminated, _, _ = env.step("It is 12.")
    assert terminated and reward == 1.0


def test_openai_compatible_client_for_agents_without_agentscope():
    class OpenAIAgent(Workflow):
        async def execute(self, workflow_task, model_tuner):
            client = model_tuner.as_openai_client()
            tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]
            completion = await client.chat.completions.create(model="policy", messages=[{"role": "user", "content": "add"}], tools=tools)
            call = completion.choices[0].message.tool_calls[0]
            assert completion.choices[0].finish_reason == "tool_calls"
            return WorkflowOutput(reward=float(call.function.name == "add" and json.loads(call.function.arguments) == {"a": 1}))

    env = AgentEnv(OpenAIAgent, None, [TASK])
    obs, _ = env.reset(seed=0)
    assert obs["tools"][0]["function"]["name"] == "add"
    _, reward, *_ = env.step(tool_call("add", a=1))
    assert reward == 1.0


def test_render_ansi_prints_the_conversation():
    env = AgentEnv(ChatLoop, EchoJudge(), [TASK], render_mode="ansi")
    env.reset(seed=0)
    env.step("first reply")
    text = env.render()
    assert "What is 7 + 5?" in text and "first reply" in text and "── assistant" in text


def test_make_vec_runs_episodes_side_by_side():
    envs = gymnasium.make_vec("agent_env/Workflow-v0", num_envs=3, vectorization_mode="sync",
                              workflow=ChatLoop, judge=EchoJudge(), tasks=[TASK])
    obs, infos = envs.reset(seed=0)
    assert len(obs) == 3 and obs[0]["messages"][0]["content"] == "What is 7 + 5?"
    for _ in range(3):
        obs, rewards, terminated, truncated, infos = envs.step(("12", "no", "12"))
    assert list(terminated) == [True, True, True]
    assert [round(r, 6) for r in rewards] == [1.1, 0.1, 1.1]
    envs.close()


# ----------------------------------------------------------------- registration and contract checks


@pytest.mark.parametrize("env_id,kwargs", [
    ("agent_env/MathAgent-v0", {}),
    ("agent_env/Workflow-v0", {"workflow": ChatLoop, "judge": EchoJudge(), "tasks": [TASK]}),
    ("agent_env/Completion-v0", {"tasks": [TASK], "reward_fns": [lambda completions, answer, **kw: [float(answer[0] in completions[0][-1]["content"])]]}),
])
def test_builtin_envs_pass_both_checkers(env_id, kwargs):
    env = gymnasium.make(env_id, **kwargs)
    agent_env.check_env(env)
    gymnasium_check_env(env, skip_render_check=True)


def test_unknown_env_id_suggests_the_nearest():
    with pytest.raises(gymnasium.error.NameNotFound, match="Did you mean 'agent_env/MathAgent-v0'"):
        agent_env.make("agent_env/MathAgnt-v0")


def test_agent_env_imports_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'vllm', 'transformers', 'deepspeed', 'ray'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import agent_env, ajet, gymnasium\n"
        "env = gymnasium.make('agent_env/MathAgent-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok', info['task_id'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")
