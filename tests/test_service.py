"""EnvService: one contract suite run against a local env and the same env served over loopback HTTP, plus the
service's own promises (schema, rejected fields, 100 concurrent sessions, reaping the sessions of dead clients)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import agent_env
import gymnasium
import httpx
import loopback
import pytest
from agent_env import Task
from agent_env.service import EnvServiceError, EnvServiceTasks, RemoteAgentEnv, SessionNotFoundError
from agent_env.service.server import EnvService, create_app, is_loopback
from agent_env.tasks import ArithmeticTasks
from gymnasium.utils.env_checker import check_env as gymnasium_check_env

TASK = Task(main_query="What is 7 + 5?", task_id="t-add", metadata={"answer": "12"})
SCRIPTED = Path(__file__).resolve().with_name("scripted.py")
CHAT_LOOP = f"{SCRIPTED}:ChatLoop"  # file references, so the server (and a subprocess) loads the same classes
RAISES = f"{SCRIPTED}:Raises"
ECHO_JUDGE = f"{SCRIPTED}:EchoJudge"


def chat_loop_kwargs(**extra):
    return {"workflow": CHAT_LOOP, "judge": ECHO_JUDGE, "tasks": [TASK.model_dump()], **extra}


# ----------------------------------------------------------------------------- a loopback server in this process


class LoopbackServer(loopback.LoopbackServer):
    """An `EnvService` on a free loopback port, on a thread of this test process."""

    def __init__(self, service: EnvService) -> None:
        self.service = service
        super().__init__(create_app(service))


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(EnvService(idle_timeout_s=300)) as running:
        yield running


@pytest.fixture
def reaping_server():
    with LoopbackServer(EnvService(idle_timeout_s=1.0)) as running:
        yield running


def wait_for(condition, timeout_s: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- one contract, local and remote


@pytest.fixture(params=["local", "remote"])
def make_env(request, server):
    """`make_env(env_id, **kwargs)`: `agent_env.make` for `local`, `RemoteAgentEnv` on the loopback server for `remote`."""
    made = []

    def make(env_id, **kwargs):
        env = agent_env.make(env_id, **kwargs) if request.param == "local" else RemoteAgentEnv(server.url, env_id, **kwargs)
        made.append(env)
        return env

    yield make
    for env in made:
        env.close()


def play(env, actions):
    results = []
    for action in actions:
        results.append(env.step(action))
        if results[-1][2] or results[-1][3]:
            break
    return results


def test_env_passes_both_checkers(make_env):
    env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs())
    agent_env.check_env(env)
    gymnasium_check_env(env, skip_render_check=True)


def test_math_agent_passes_checks_and_solves_with_the_python_tool(make_env):
    env = make_env("agent_env/MathAgent-v0")
    agent_env.check_env(env)
    obs, info = env.reset(options={"task": TASK})
    assert obs["messages"][-1] == {"role": "user", "content": "What is 7 + 5?"}
    assert [tool["function"]["name"] for tool in obs["tools"]] == ["execute_python_code"]
    call = '<tool_call>{"name": "execute_python_code", "arguments": {"code": "print(7 + 5)"}}</tool_call>'
    obs, reward, terminated, truncated, info = env.step(call)
    assert (reward, terminated, truncated, info["turn"]) == (0.0, False, False, 1)
    assert obs["messages"][-1]["role"] == "tool" and "12" in obs["messages"][-1]["content"]
    _, reward, terminated, _, info = env.step("The answer is \\boxed{12}.")
    assert (reward, terminated, info["is_success"], info["termination_reason"]) == (1.0, True, True, "finished")


def test_per_step_rewards_judge_components_and_info_keys(make_env):
    env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs())
    obs, info = env.reset(seed=3)
    assert obs == {"messages": [{"role": "user", "content": "What is 7 + 5?"}], "tools": [], "call_id": obs["call_id"]}
    assert info["task_id"] == "t-add" and info["turn"] == 0
    results = play(env, ["x", "y", "it is 12"])
    assert [round(float(r[1]), 6) for r in results] == [0.1, 0.1, 1.1]
    info = results[-1][4]
    assert results[-1][2:4] == (True, False)
    assert info["reward_components"] == {"contains_answer": 1.0} and info["is_success"] is True
    assert {"termination_reason", "final_reward", "log_metrics", "episode_id", "tool_call_errors", "pending_calls"} <= set(info)
    assert results[-1][0]["call_id"] == "" and results[-1][0]["messages"][-1] == {"role": "assistant", "content": "it is 12"}


def test_reset_takes_a_task_as_object_or_dict_and_is_deterministic_under_a_seed(make_env):
    env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs())
    other = Task(main_query="What is 1 + 1?", task_id="t-two", metadata={"answer": "2"})
    for task in (other, other.model_dump()):
        obs, info = env.reset(options={"task": task, "repeat_index": 2, "episode_id": "ep-fixed"})
        assert obs["messages"][0]["content"] == "What is 1 + 1?"
        assert (info["task_id"], info["episode_id"]) == ("t-two", "ep-fixed")
    first = env.reset(seed=11)[1]["episode_id"]
    assert env.reset(seed=11)[1]["episode_id"] == first


def test_refused_calls_raise_the_same_exceptions(make_env):
    env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs())
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("too early")
    with pytest.raises(ValueError, match="Unknown reset options"):
        env.reset(options={"tsak": TASK})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="truncating reason"):
        env.truncate("finished")
    with pytest.raises(TypeError, match="completion text"):
        env.step(42)
    play(env, ["a", "b", "c"])
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("after the end")


def test_driver_truncation_and_workflow_errors_end_episodes_with_their_reason(make_env):
    env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs(truncation_reward=-0.1))
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.truncate("response_truncated")
    assert (reward, terminated, truncated, info["termination_reason"]) == (-0.1, False, True, "response_truncated")

    failing = make_env("agent_env/Workflow-v0", workflow=RAISES, tasks=[TASK.model_dump()], workflow_error_reward=-1.0)
    failing.reset(seed=0)
    _, reward, terminated, _, info = failing.step("hello")
    assert (reward, terminated, info["termination_reason"]) == (-1.0, True, "workflow_error")
    assert "ValueError: boom in the workflow" in info["error"]


def test_structured_action_as_an_openai_sdk_dump_is_accepted(make_env):
    env = make_env("agent_env/MathAgent-v0")
    env.reset(options={"task": TASK})
    action = {  # what `ChatCompletionMessage.model_dump()` gives
        "role": "assistant", "content": None, "refusal": None, "annotations": None, "audio": None, "function_call": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "execute_python_code", "arguments": json.dumps({"code": "print(3*4)"})}}],
    }
    obs, *_ = env.step(action)
    assert obs["messages"][-1]["role"] == "tool" and "12" in obs["messages"][-1]["content"]
    _, _, _, _, info = env.step({"role": "assistant", "content": "", "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}]})
    assert info["tool_call_errors"] == 1


async def test_async_twins_and_sync_calls_inside_a_running_loop(make_env):
    env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs())
    obs, info = await env.areset(seed=0)
    for action in ("a", "b"):
        _, _, terminated, _, info = await env.astep(action)
    _, reward, terminated, _, info = await env.astep("12")
    assert terminated and info["is_success"] and round(float(reward), 6) == 1.1
    await env.aclose()
    await env.aclose()
    sync_env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs())
    sync_env.reset(seed=0)  # called from a coroutine, as in Jupyter
    assert sync_env.step("x")[4]["turn"] == 1


def test_close_twice_then_reset_starts_over(make_env):
    env = make_env("agent_env/Workflow-v0", **chat_loop_kwargs())
    env.reset(seed=0)
    env.close()
    env.close()
    obs, info = env.reset(seed=0)
    assert info["turn"] == 0 and obs["messages"][0]["content"] == "What is 7 + 5?"


# ----------------------------------------------------------------------------- the service's own promises


def test_schema_endpoint_serves_every_message_with_unknown_fields_forbidden(server):
    schemas = httpx.get(f"{server.url}/schema").json()
    assert {"CreateSessionRequest", "ResetRequest", "StepRequest", "StepResponse", "TasksRequest", "ErrorResponse"} <= set(schemas)
    assert schemas["StepRequest"]["additionalProperties"] is False
    assert schemas["StepRequest"]["$defs"]["AssistantMessage"]["additionalProperties"] is False


def test_unknown_field_in_a_request_is_rejected_with_its_name(server):
    response = httpx.post(f"{server.url}/sessions", json={"env_id": "agent_env/Workflow-v0", "env_kwrags": {}})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "ValidationError" and "env_kwrags" in error["message"] and "GET /schema" in error["message"]


def test_unknown_env_id_gets_the_nearest_served_one():
    with LoopbackServer(EnvService(idle_timeout_s=60)) as running:
        with pytest.raises(gymnasium.error.NameNotFound, match="Did you mean .agent_env/MathAgent-v0."):
            RemoteAgentEnv(running.url, "agent_env/MathAgnt-v0").reset()
    with LoopbackServer(EnvService(env_ids=["agent_env/Workflow-v0"], idle_timeout_s=60)) as running:
        assert httpx.get(f"{running.url}/envs").json() == {"env_ids": ["agent_env/Workflow-v0"]}
        response = httpx.post(f"{running.url}/sessions", json={"env_id": "agent_env/MathAgent-v0"})
        assert response.status_code == 403 and "--env agent_env/MathAgent-v0" in response.json()["error"]["message"]


def test_sessions_beyond_the_limit_are_refused_until_one_is_released():
    with LoopbackServer(EnvService(max_sessions=1, idle_timeout_s=60)) as running:
        first = RemoteAgentEnv(running.url, "agent_env/Workflow-v0", **chat_loop_kwargs())
        first.reset(seed=0)
        second = RemoteAgentEnv(running.url, "agent_env/Workflow-v0", **chat_loop_kwargs())
        with pytest.raises(EnvServiceError, match="--max-sessions 1") as refused:
            second.reset(seed=0)
        assert refused.value.status == 503
        first.close()
        assert second.reset(seed=0)[1]["turn"] == 0
        second.close()


def test_bad_env_kwargs_are_a_clear_client_error(server):
    with pytest.raises(TypeError, match="Making agent_env/Workflow-v0"):
        RemoteAgentEnv(server.url, "agent_env/Workflow-v0", **chat_loop_kwargs(no_such_kwarg=1)).reset()


def test_tasks_endpoint_serves_a_split_page_by_page():
    expected = list(ArithmeticTasks(level="easy", split="validation"))
    with LoopbackServer(EnvService(idle_timeout_s=60)) as running:
        tasks = EnvServiceTasks(running.url, "MathAgent-v0", "validation", page_size=100)
        assert len(tasks) == 256
        assert tasks[150] == expected[150] and tasks[-1] == expected[-1] and tasks[98:102] == expected[98:102]
        assert list(tasks) == expected
        with pytest.raises(IndexError, match="256 tasks"):
            tasks[256]
        train = EnvServiceTasks(running.url, "agent_env/MathAgent-v0", "train", env_kwargs={"level": "mix"})
        assert train[0] == ArithmeticTasks(level="mix", split="train")[0]


def test_tasks_from_an_unreachable_service_say_where_and_what_to_check():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: connection refused
        with pytest.raises(RuntimeError, match="agent-env serve.*env_service.env_url"):
            len(EnvServiceTasks(url, "MathAgent-v0", "train"))


async def test_100_concurrent_sessions_driven_by_a_scripted_policy(server):
    async def play_remote(index: int) -> float:
        env = RemoteAgentEnv(server.url, "agent_env/Workflow-v0", **chat_loop_kwargs())
        await env.areset(seed=index)
        total, done = 0.0, False
        actions = iter(["x", "y", "12" if index % 2 else "no"])
        while not done:
            _, reward, terminated, truncated, _ = await env.astep(next(actions))
            total += reward
            done = terminated or truncated
        await env.aclose()
        return total

    totals = await asyncio.gather(*(play_remote(i) for i in range(100)))
    assert sorted({round(t, 6) for t in totals}) == [0.3, 1.3]
    assert sum(1 for t in totals if t > 1) == 50
    assert len(server.service.sessions) == 0  # every aclose() released its session


def test_a_killed_client_is_reaped_and_the_server_keeps_serving(reaping_server):
    url = reaping_server.url
    client = (
        "import sys, time\n"
        "from agent_env.service import RemoteAgentEnv\n"
        f"env = RemoteAgentEnv({url!r}, 'agent_env/Workflow-v0', workflow={CHAT_LOOP!r}, tasks=[{TASK.model_dump()!r}])\n"
        "env.reset(seed=1)\n"
        "print(env.session_id, flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", client], stdout=subprocess.PIPE, text=True)
    try:
        dead_session = process.stdout.readline().strip()
    finally:
        process.kill()
        process.wait(timeout=30)
    assert len(dead_session) == 32, "the client subprocess did not open a session"
    live = RemoteAgentEnv(url, "agent_env/Workflow-v0", **chat_loop_kwargs())
    turns = []
    while True:  # the live client keeps calling while the dead one's session waits to be reaped
        live.reset(seed=0)
        turns.append(live.step("x")[4]["turn"])
        if dead_session not in reaping_server.service.sessions:
            break
        assert len(turns) < 300, "the dead client's session was never reaped"
        time.sleep(0.05)
    assert set(turns) == {1}
    assert httpx.post(f"{url}/sessions/{dead_session}/step", json={"action": "x"}).status_code == 404
    assert live.step("still here")[4]["turn"] == 2
    assert httpx.get(f"{url}/health").json()["sessions"] == 1
    live.close()
    assert httpx.get(f"{url}/health").json()["sessions"] == 0


def test_a_reaped_session_tells_step_to_reset_and_reset_opens_a_new_one(reaping_server):
    env = RemoteAgentEnv(reaping_server.url, "agent_env/Workflow-v0", **chat_loop_kwargs())
    env.reset(seed=0)
    first = env.session_id
    wait_for(lambda: first not in reaping_server.service.sessions, what="the idle session to be reaped")
    with pytest.raises(SessionNotFoundError, match="Call reset"):
        env.step("x")
    env.reset(seed=0)
    assert env.session_id != first and env.step("x")[4]["turn"] == 1
    env.close()


def test_only_loopback_addresses_count_as_private():
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "10.0.0.5", "example.org"))


def test_agent_env_serve_command_serves_the_chosen_envs(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(Path(sys.executable).with_name("agent-env")), "serve", "--port", str(port), "--env", "agent_env/Workflow-v0",
               "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def up() -> bool:
            assert process.poll() is None, process.stdout.read()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "agent-env serve to answer /health")
        assert httpx.get(f"http://127.0.0.1:{port}/envs").json() == {"env_ids": ["agent_env/Workflow-v0"]}
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_service_client_and_eval_import_without_torch():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'vllm', 'transformers', 'deepspeed', 'ray'):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import agent_env.cli, agent_env.evaluation, agent_env.service.server, agent_env.service.client\n"
        "agent_env.service.server.create_app()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
