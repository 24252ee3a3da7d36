"""Eval-only runs against a scripted OpenAI-compatible endpoint on loopback, whose right and wrong answers are
fixed per question, so accuracy, pass@k, turns and tool-call error rates are checked against exact values."""

from __future__ import annotations

import collections
import json
import math
import re
import socket
import time
import uuid
from pathlib import Path

import agent_env
import httpx
import pytest
from agent_env.cli import main as cli_main
from agent_env.evaluation import OpenAIChatPolicy, aevaluate, evaluate, pass_at_k, reported_ks
from agent_env.service.server import EnvService, create_app
from agent_env.tasks import ArithmeticTasks
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from loopback import LoopbackServer

REPO_ROOT = Path(__file__).resolve().parents[1]
QUESTION = re.compile(r"What is (-?\d+) ([-+*]) (-?\d+)\?")


# ----------------------------------------------------------------------------- the scripted endpoint


def parse_question(text: str) -> tuple[int, str, int, int]:
    a, op, b = QUESTION.search(text).groups()
    a, b = int(a), int(b)
    return a, op, b, a + b if op == "+" else a - b if op == "-" else a * b


def correct_count(question: str, k: int) -> int:
    """How many of a question's k answers the endpoint gets right: a mod (k + 1)."""
    return parse_question(question)[0] % (k + 1)


def calls_a_missing_tool(question: str) -> bool:
    return parse_question(question)[2] % 3 == 0


def scripted_chat_app() -> FastAPI:
    """`/v1/chat/completions` that plays a model named `{mode}/{k}/{tag}`:

    - mode `direct`: answers `\\boxed{}` at once;
    - mode `tools`: first calls `execute_python_code` (or, when b % 3 == 0, a `calculator` tool that is not
      offered), then answers `\\boxed{}` after the tool result;
    - mode `fail`: answers HTTP 500 when a is even, else as `direct`.

    Of the answers to one question (per model name) the first `a mod (k + 1)` are right, the rest off by one.
    """
    app = FastAPI()
    app.state.requests = []
    answered: collections.Counter[tuple[str, str]] = collections.Counter()

    def completion(model: str, message: dict, finish_reason: str) -> dict:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", **message}}]}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "direct/1/listed", "object": "model", "created": 0, "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: dict) -> JSONResponse:
        app.state.requests.append(body)
        mode, k, _ = body["model"].split("/")
        question = next(m["content"] for m in body["messages"] if m["role"] == "user")
        a, op, b, answer = parse_question(question)
        if mode == "fail" and a % 2 == 0:
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}}, status_code=500)
        if mode == "tools" and body["messages"][-1]["role"] == "user":
            name = "calculator" if calls_a_missing_tool(question) else "execute_python_code"
            call = {"id": f"call-{uuid.uuid4().hex[:6]}", "type": "function",
                    "function": {"name": name, "arguments": json.dumps({"code": f"print({a} {op} {b})"})}}
            return JSONResponse(completion(body["model"], {"content": None, "tool_calls": [call]}, "tool_calls"))
        index = answered[body["model"], question]
        answered[body["model"], question] += 1
        value = answer if index < correct_count(question, int(k)) else answer + 1
        return JSONResponse(completion(body["model"], {"content": f"So the answer is \\boxed{{{value}}}."}, "stop"))

    return app


@pytest.fixture(scope="module")
def endpoint():
    """The scripted endpoint's base URL (`.../v1`) and its app (whose `state.requests` records every request)."""
    app = scripted_chat_app()
    with LoopbackServer(app) as server:
        yield f"{server.url}/v1", app


def model_name(mode: str, k: int) -> str:
    return f"{mode}/{k}/{uuid.uuid4().hex}"  # a fresh tag: the endpoint's answer counters start at 0


def expected_pass_at(tasks, k: int, j: int) -> float:
    """Mean over tasks of 1 - C(n - c, j) / C(n, j), computed with exact binomials."""
    values = [1 - math.comb(k - c, j) / math.comb(k, j) for c in (correct_count(t.main_query, k) for t in tasks)]
    return sum(values) / len(values)


def boxed_reward(completions, answer, **kwargs):
    return [float(f"\\boxed{{{answer[0]}}}" in completions[0][-1]["content"])]


def distinct_tasks(n: int, level: str = "easy") -> list:
    """The first `n` validation tasks with distinct questions (the endpoint keys its answers by question)."""
    seen, tasks = set(), []
    for task in ArithmeticTasks(level=level, split="validation"):
        if task.main_query not in seen:
            seen.add(task.main_query)
            tasks.append(task)
        if len(tasks) == n:
            return tasks
    raise AssertionError("not enough distinct tasks")


def completion_env(tasks):
    return lambda: agent_env.make("agent_env/Completion-v0", tasks=list(tasks), reward_fns=[boxed_reward])


# ----------------------------------------------------------------------------- the estimator


def test_pass_at_k_is_the_unbiased_estimator():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 6, 5) == 1.0 and pass_at_k(4, 1, 1) == 0.25
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(2, 3, 1)


def test_reported_ks_are_one_powers_of_two_and_k():
    assert reported_ks(1) == [1] and reported_ks(4) == [1, 2, 4] and reported_ks(6) == [1, 2, 4, 6]


# ----------------------------------------------------------------------------- the Python API


async def test_accuracy_and_pass_at_k_match_the_endpoints_answers_exactly(endpoint, tmp_path):
    url, app = endpoint
    tasks = distinct_tasks(12)
    k, model = 4, model_name("direct", 4)
    policy = OpenAIChatPolicy(url, model, temperature=1.0, max_tokens=64)
    report = await aevaluate(completion_env(tasks), policy, tasks, k=k, concurrency=8)

    counts = [correct_count(t.main_query, k) for t in tasks]
    assert [t.successes for t in report.tasks] == counts and [t.samples for t in report.tasks] == [k] * 12
    assert report.accuracy == pytest.approx(sum(counts) / (12 * k))
    assert report.accuracy not in (0.0, 1.0)
    assert set(report.pass_at_k) == {1, 2, 4}
    for j in (1, 2, 4):
        assert report.pass_at_k[j] == pytest.approx(expected_pass_at(tasks, k, j))
    assert report.mean_reward == pytest.approx(report.accuracy)
    assert (report.mean_turns, report.tool_calls, report.tool_call_error_rate) == (1.0, 0, 0.0)
    assert report.termination_reasons == {"finished": 48} and report.num_episodes == 48

    sent = [r for r in app.state.requests if r["model"] == model]
    assert len(sent) == 48
    assert all("tools" not in r and r["temperature"] == 1.0 and r["max_tokens"] == 64 for r in sent)
    assert sent[0]["messages"] in [t.init_messages for t in tasks]
    episode = report.episodes[0]
    assert episode.messages[-1]["role"] == "assistant" and "\\boxed{" in episode.messages[-1]["content"]

    path = report.write_json(tmp_path / "out" / "report.json")
    saved = json.loads(path.read_text())
    assert saved["accuracy"] == report.accuracy and saved["pass_at_k"]["4"] == report.pass_at_k[4]
    assert len(saved["episodes"]) == 48 and len(saved["tasks"]) == 12
    table = report.format_table()
    assert "accuracy" in table and "pass@4" in table and "tool-call error rate" in table
    await policy.aclose()


async def test_tool_calls_of_the_math_agent_reach_the_endpoint_and_errors_are_counted(endpoint):
    url, app = endpoint
    tasks = distinct_tasks(6)
    k, model = 2, model_name("tools", 2)
    report = await aevaluate(lambda: agent_env.make("agent_env/MathAgent-v0"), OpenAIChatPolicy(url, model), tasks, k=k, concurrency=6)

    missing = sum(k for t in tasks if calls_a_missing_tool(t.main_query))
    assert 0 < missing < 12
    assert (report.tool_calls, report.tool_call_errors) == (12, missing)
    assert report.tool_call_error_rate == pytest.approx(missing / 12)
    assert report.mean_turns == 2.0 and report.termination_reasons == {"finished": 12}
    assert report.accuracy == pytest.approx(sum(correct_count(t.main_query, k) for t in tasks) / 12)
    first_calls = [r for r in app.state.requests if r["model"] == model and r["messages"][-1]["role"] == "user"]
    assert all([tool["function"]["name"] for tool in r["tools"]] == ["execute_python_code"] for r in first_calls)
    tool_results = [r["messages"][-1] for r in app.state.requests if r["model"] == model and r["messages"][-1]["role"] == "tool"]
    assert len(tool_results) == 12
    assert any("FunctionNotFoundError" in m["content"] for m in tool_results)


async def test_a_failing_endpoint_ends_only_its_episodes_and_sync_evaluate_runs_inside_a_loop(endpoint):
    url, _ = endpoint
    tasks = distinct_tasks(8)
    policy = OpenAIChatPolicy(url, model_name("fail", 1), max_retries=0)
    report = evaluate(completion_env(tasks), policy, tasks, k=1, concurrency=4)  # sync API, called inside a running loop

    failing = [t for t in tasks if parse_question(t.main_query)[0] % 2 == 0]
    assert 0 < len(failing) < 8
    assert report.termination_reasons.get("policy_error") == len(failing)
    assert report.num_episodes == 8
    errors = [e for e in report.episodes if e.termination_reason == "policy_error"]
    assert all(not e.is_success and "scripted failure" in e.error for e in errors)
    solved = sum(correct_count(t.main_query, 1) for t in tasks if t not in failing)
    assert report.accuracy == pytest.approx(solved / 8)


async def test_policy_without_a_model_name_uses_the_first_the_endpoint_lists(endpoint):
    url, _ = endpoint
    policy = OpenAIChatPolicy(url)
    action = await policy({"messages": [{"role": "user", "content": "What is 5 + 4?"}], "tools": [], "call_id": "c"})
    assert policy.model == "direct/1/listed" and action == "So the answer is \\boxed{9}."
    await policy.aclose()


# ----------------------------------------------------------------------------- the command line and the service


def test_cli_eval_runs_the_tutorial_config_and_writes_the_report(endpoint, tmp_path, capsys):
    url, _ = endpoint
    output = tmp_path / "eval.json"
    config = REPO_ROOT / "examples" / "math_agent" / "math_agent.yaml"
    status = cli_main(["eval", "--config", str(config), "--endpoint", url, "--model", model_name("tools", 2), "-k", "2",
                       "--num-tasks", "4", "--temperature", "1.0", "--output", str(output), "--no-progress"])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads(output.read_text())
    tasks = ArithmeticTasks(level="easy", split="validation", n=4)
    assert len({t.main_query for t in tasks}) == 4
    assert [t["task_id"] for t in report["tasks"]] == [t.task_id for t in tasks]
    assert report["num_episodes"] == 8 and report["termination_reasons"] == {"finished": 8}
    assert report["accuracy"] == pytest.approx(sum(correct_count(t.main_query, 2) for t in tasks) / 8)
    assert report["pass_at_k"]["2"] == pytest.approx(expected_pass_at(tasks, 2, 2))
    assert report["metadata"]["config"] == str(config) and report["metadata"]["temperature"] == 1.0
    assert "pass@2" in out and f"report: {output}" in out
    assert "note: trinity" in err  # the tutorial's unused blocks are reported


def test_cli_eval_of_an_env_id_uses_its_own_tasks_of_the_split(endpoint, tmp_path, capsys):
    url, _ = endpoint
    output = tmp_path / "eval.json"
    status = cli_main(["eval", "--env", "agent_env/MathAgent-v0", "--env-kwargs", '{"level": "mix"}', "--endpoint", url,
                       "--model", model_name("direct", 1), "--num-tasks", "3", "--output", str(output), "--no-progress"])
    assert status == 0, capsys.readouterr().err
    report = json.loads(output.read_text())
    assert [t["task_id"] for t in report["tasks"]] == ["arith-mix-validation-0", "arith-mix-validation-1", "arith-mix-validation-2"]
    assert report["metadata"]["temperature"] == 0.0 and report["k"] == 1


def test_cli_eval_against_an_unreachable_endpoint_fails_with_the_cause(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # bound, not listening: connection refused
        status = cli_main(["eval", "--env", "agent_env/MathAgent-v0", "--endpoint", url, "--model", "m", "--num-tasks", "2",
                           "--output", str(tmp_path / "eval.json"), "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    assert "2 of 2 episodes failed outside the task (policy_error: openai.APIConnectionError: Connection error.)" in err


def test_cli_eval_user_errors_exit_2_with_the_fix(tmp_path, capsys):
    assert cli_main(["eval", "--env", "agent_env/MathAgnt-v0", "--endpoint", "http://127.0.0.1:9/v1"]) == 2
    assert "Did you mean 'agent_env/MathAgent-v0'?" in capsys.readouterr().err
    assert cli_main(["eval", "--config", str(tmp_path / "missing.yaml"), "--endpoint", "http://127.0.0.1:9/v1"]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_service_evaluate_endpoint_runs_an_eval_server_side(endpoint):
    url, _ = endpoint
    with LoopbackServer(create_app(EnvService(idle_timeout_s=60))) as service:
        body = {"env_id": "agent_env/MathAgent-v0", "endpoint": url, "model": model_name("direct", 2), "split": "validation",
                "num_tasks": 5, "k": 2, "temperature": 1.0, "concurrency": 4}
        response = httpx.post(f"{service.url}/evaluate", json=body, timeout=120)
    assert response.status_code == 200, response.text
    report = response.json()
    tasks = ArithmeticTasks(level="easy", split="validation", n=5)
    assert len({t.main_query for t in tasks}) == 5
    assert report["num_episodes"] == 10 and report["metadata"]["env_id"] == "agent_env/MathAgent-v0"
    assert report["accuracy"] == pytest.approx(sum(correct_count(t.main_query, 2) for t in tasks) / 10)
