"""Judges: answer extraction, math-verify off the main thread with a timeout, exact/regex/last-number, LLM, composite."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from agent_env.judge import JudgeResult, run_judge
from agent_env.judges import (
    Component,
    CompositeJudge,
    ExactMatchJudge,
    LastNumberJudge,
    LLMJudge,
    MathAnswerAsJudge,
    MathVerifier,
    RegexJudge,
)
from agent_env.judges.answer_extraction import last_boxed, last_number, numeric_value, reference_answer
from agent_env.types import Task, WorkflowOutput, WorkflowTask


def episode(answer: object, final_answer: object, **task_fields) -> tuple[WorkflowTask, WorkflowOutput]:
    task = Task(
        task_id="t-1", main_query=task_fields.pop("question", "What is 9 + 9?"), metadata={"answer": answer}
    )
    return WorkflowTask(task=task), WorkflowOutput(metadata={"final_answer": final_answer})


# ---------------------------------------------------------------- answer extraction


def test_last_boxed_takes_the_last_one_with_nested_braces():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{{a}{b}}") == "{a}{b}"
    assert last_boxed(r"\boxed {7}") == "7"
    assert last_boxed("no box here") is None


def test_last_boxed_skips_an_unclosed_box_of_a_truncated_completion():
    assert last_boxed(r"\boxed{3} and then \boxed{4") == "3"
    assert last_boxed(r"\boxed{4") is None


def test_last_number_and_reference_answer():
    assert last_number("It costs $1,234.50, no, 18.") == "18"
    assert last_number("from -3 to -7") == "-7"
    assert last_number("1,000 apples") == "1000"
    assert last_number("none") is None
    assert reference_answer("Natalia sold 48+24 = 72 clips.\n#### 72") == "72"
    assert reference_answer(" 18 ") == "18"
    assert reference_answer(18) == "18"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("18", 18),
        ("18.0", 18),
        ("$1,000", 1000),
        ("1{,}000", 1000),
        ("\\frac{1}{2}", 0.5),
        ("1/2", 0.5),
        ("18 apples", 18),
    ],
)
def test_numeric_value_reads_plain_numbers_exactly(text, value):
    assert numeric_value(text) == value


def test_numeric_value_is_none_for_expressions():
    assert numeric_value("x + 1") is None
    assert numeric_value("2 pi") is None


# ---------------------------------------------------------------- MathAnswerAsJudge


@pytest.fixture(scope="module")
def verifier():
    verifier = MathVerifier(timeout_s=20.0, max_workers=1)
    yield verifier
    verifier.close()


@pytest.mark.parametrize(
    ("answer", "final_answer"),
    [
        ("1000", r"So the total is \boxed{1,000}."),
        ("18", r"\boxed{18.0}"),
        ("18", r"\boxed{\$18}"),
        ("18", r"\boxed{$18}"),
        ("0.5", r"\boxed{\frac{1}{2}}"),
        ("1/2", r"\boxed{0.5}"),
        ("\\frac{1}{2}", r"\boxed{1/2}"),
        ("18", r"\boxed{18 apples}"),
        ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", r"She sold \boxed{72} clips."),
        ("#### 1,000", r"\boxed{1000}"),
        ("18", r"first \boxed{3}, corrected: \boxed{\text{18}}"),
    ],
)
async def test_math_judge_accepts_equivalent_answers(verifier, answer, final_answer):
    result = await run_judge(MathAnswerAsJudge(verifier=verifier), *episode(answer, final_answer))
    assert result == JudgeResult(1.0, True, {"correct": 1.0, "boxed": 1.0, "unevaluated": 0.0, "timeout": 0.0})


@pytest.mark.parametrize(
    ("answer", "final_answer", "boxed"),
    [
        ("18", r"\boxed{19}", 1.0),
        ("18", r"\boxed{18} no wait \boxed{17}", 1.0),
        ("18", "the answer is 18", 0.0),
        ("18", None, 0.0),
        ("#### 72", r"\boxed{7.2}", 1.0),
    ],
)
async def test_math_judge_rejects_wrong_or_unboxed_answers(verifier, answer, final_answer, boxed):
    result = await run_judge(MathAnswerAsJudge(verifier=verifier), *episode(answer, final_answer))
    assert result == JudgeResult(0.0, False, {"correct": 0.0, "boxed": boxed, "unevaluated": 0.0, "timeout": 0.0})


@pytest.mark.parametrize(("gold", "answer", "reward"), [
    ("2384000", r"\boxed{1600 * 1490}", 0.0), ("2384000", r"\boxed{1600 \times 1490}", 0.0),
    ("33554432", r"\boxed{32^5}", 0.0), ("45", r"\boxed{679485 \mod 57}", 0.0), ("6912", r"\boxed{1234 + 5678}", 0.0),
    ("2384000", r"\boxed{\frac{4768000}{2}}", 0.0), ("-8", r"\boxed{-3 - 5}", 0.0),
    ("2384000", r"\boxed{2,384,000}", 1.0), ("-2", r"\boxed{-2}", 1.0), ("0.5", r"\boxed{\frac{1}{2}}", 1.0),
    ("18", r"\boxed{18 apples}", 1.0),
])
def test_math_judge_refuses_arithmetic_left_undone_when_the_reference_is_a_number(gold, answer, reward):
    """The hack a GRPO run found on calculator tasks: restating the question in the box (math-verify evaluates it to
    the reference). It earns nothing; numbers in any format still do, and `accept_unevaluated` turns the rule off."""
    result = asyncio.run(run_judge(MathAnswerAsJudge(), *episode(gold, answer)))
    assert result.reward == reward and result.components["unevaluated"] == 1.0 - reward
    if reward == 0.0:
        assert asyncio.run(run_judge(MathAnswerAsJudge(accept_unevaluated=True), *episode(gold, answer))).reward == 1.0


def test_math_judge_names_a_missing_final_answer_key():
    workflow_task = episode("18", "x")[0]
    with pytest.raises(
        KeyError, match=r"metadata\['final_answer'\], which the workflow did not set \(it set \['answer'\]\)"
    ):
        asyncio.run(run_judge(MathAnswerAsJudge(), workflow_task, WorkflowOutput(metadata={"answer": "18"})))


async def test_a_verifier_hang_is_a_zero_reward_with_timeout_and_the_loop_keeps_running(verifier):
    # an expression is what makes math-verify hang, so let the judge take expressions
    judge = MathAnswerAsJudge(verifier=verifier, timeout_s=1.0, accept_unevaluated=True)
    await run_judge(judge, *episode("7", r"\boxed{7}"))  # workers up before timing
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    start = time.monotonic()
    result = await run_judge(judge, *episode("7", r"\boxed{9^{9^{9^{9}}}}"))
    elapsed = time.monotonic() - start
    ticking.cancel()
    assert result == JudgeResult(0.0, False, {"correct": 0.0, "boxed": 1.0, "unevaluated": 0.0, "timeout": 1.0})
    assert elapsed < 10
    assert ticks > 30, "the event loop was blocked while the verifier hung"
    # Only the hung worker was killed; the verifier keeps working.
    assert (await run_judge(judge, *episode("7", r"\boxed{7.0}"))).is_success


def test_math_judge_works_off_the_main_thread(verifier):
    """math-verify's own timeout (signal.alarm) raises off the main thread; ours does not."""
    results = []
    thread = threading.Thread(
        target=lambda: results.append(
            asyncio.run(run_judge(MathAnswerAsJudge(verifier=verifier), *episode("18", r"\boxed{18}")))
        )
    )
    thread.start()
    thread.join(60)
    assert results and results[0].is_success


def test_verifier_compares_concurrently_from_many_threads(verifier):
    pairs = [(str(i), f"{i}.0") for i in range(12)] + [(str(i), str(i + 1)) for i in range(12)]
    threads_results: dict[int, bool] = {}

    def work(k: int, gold: str, answer: str) -> None:
        threads_results[k] = verifier.verify(gold, answer).equal

    threads = [threading.Thread(target=work, args=(k, *pair)) for k, pair in enumerate(pairs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [threads_results[k] for k in range(len(pairs))] == [True] * 12 + [False] * 12


def test_an_unparsable_reference_is_an_error_result_not_a_crash(verifier):
    result = verifier.verify("", "18")
    assert not result.equal and not result.timed_out and "reference" in result.error


def test_importing_judges_and_tasks_loads_no_heavy_dependency():
    code = (
        "import sys, agent_env.judges, agent_env.tasks;"
        "heavy = [m for m in ('math_verify', 'sympy', 'openai', 'datasets', 'pyarrow', 'torch') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- last-number, exact, regex


@pytest.mark.parametrize(
    ("final_answer", "reward", "components"),
    [
        (r"9 + 4 = \boxed{13}", 1.1, {"correct": 1.0, "format": 1.0}),
        ("9 + 4 = 13. So 13.", 1.0, {"correct": 1.0, "format": 0.0}),
        (r"13 is wrong, \boxed{12}", 0.1, {"correct": 0.0, "format": 1.0}),
        (r"\boxed{13.0}", 1.1, {"correct": 1.0, "format": 1.0}),
        (r"\boxed{x = 13}", 1.0, {"correct": 1.0, "format": 0.0}),  # format credit: the box holds the number alone
        (r"\boxed{9 + 4} = \boxed{13}", 1.0, {"correct": 1.0, "format": 0.0}),  # one box, not a spray of them
        (r"\boxed{ \boxed{ 13 }}", 1.0, {"correct": 1.0, "format": 0.0}),
        (r"\boxed{\text{Multiplication of } 13}", 1.0, {"correct": 1.0, "format": 0.0}),
        (r"so \boxed{-12}.", 0.1, {"correct": 0.0, "format": 1.0}),
        ("The answer is 13 apples, not 12", 0.0, {"correct": 0.0, "format": 0.0}),
        ("", 0.0, {"correct": 0.0, "format": 0.0}),
        (r"\boxed{} so 13", 1.0, {"correct": 1.0, "format": 0.0}),  # an empty box earns no format credit
        (r"\boxed{} \boxed{}", 0.0, {"correct": 0.0, "format": 0.0}),
    ],
)
def test_last_number_judge_credits_the_boxed_or_last_number_and_shapes_the_format(
    final_answer, reward, components
):
    result = LastNumberJudge().compute_reward(*episode("13", final_answer))
    assert result.reward == pytest.approx(reward)
    assert result.components == components
    assert result.is_success == (components["correct"] == 1.0)


def test_last_number_judge_without_format_weight_is_the_anchors_reward():
    judge = LastNumberJudge(format_weight=0.0)
    assert judge.compute_reward(*episode("-48", "25 - 73 = -48")).reward == 1.0
    assert judge.compute_reward(*episode("-48", r"\boxed{-48}")).reward == 1.0
    assert judge.compute_reward(*episode("1,000", "#### 1000 is it")).reward == 1.0
    assert judge.compute_reward(*episode("#### 72", "48 + 24 = 72 clips")).reward == 1.0


def test_exact_match_judge_is_exact_after_trimming():
    judge = ExactMatchJudge()
    assert judge.compute_reward(*episode("#### 18", r"\boxed{ 18 }")).components == {
        "correct": 1.0,
        "extracted": 1.0,
    }
    assert judge.compute_reward(*episode("1000", r"\boxed{1,000}")).reward == 0.0
    assert judge.compute_reward(*episode("18", "18")).components == {"correct": 0.0, "extracted": 0.0}
    whole = ExactMatchJudge(extract="none", case_sensitive=True)
    assert whole.compute_reward(*episode("Paris", "  Paris ")).is_success
    assert not whole.compute_reward(*episode("Paris", "paris")).is_success
    assert ExactMatchJudge(extract="none").compute_reward(*episode("Paris", "paris")).is_success


def test_regex_judge_extracts_with_the_last_match():
    judge = RegexJudge(pattern=r"Answer:\s*(?P<answer>\S+)")
    assert judge.compute_reward(*episode("18", "Answer: 17\nAnswer: 18")).components == {
        "matched": 1.0,
        "correct": 1.0,
    }
    assert judge.compute_reward(*episode("18", "Answer: 18\nAnswer: 17")).reward == 0.0
    assert judge.compute_reward(*episode("18", "18")).components == {"matched": 0.0, "correct": 0.0}
    grouped = RegexJudge(pattern=r"<answer>(.*?)</answer>", dotall=True)
    assert grouped.compute_reward(*episode("#### 1000", "<answer>1,000</answer>")).is_success


def test_regex_judge_match_mode_checks_format_only():
    judge = RegexJudge(pattern=r"^<think>.*</think>", mode="match", dotall=True)
    assert judge.compute_reward(*episode(None, "<think>hm</think> 4")) == JudgeResult(
        1.0, True, {"matched": 1.0}
    )
    assert judge.compute_reward(*episode(None, "4")).reward == 0.0
    with pytest.raises(ValueError, match="is not a valid regular expression"):
        RegexJudge(pattern="(")


# ---------------------------------------------------------------- LLM judge against a local OpenAI-compatible server


class _Grader(BaseHTTPRequestHandler):
    """A scripted grader speaking the OpenAI chat-completions protocol."""

    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body})
        prompt = body["messages"][-1]["content"]
        response = prompt.split("Response:\n", 1)[1]
        if "\\boxed{18}" in response:
            reply = "The final answer matches the reference.\nSCORE: 1"
        elif "half" in response:
            reply = "Partly right. Score: 5/10"
        elif "ramble" in response:
            reply = "I cannot decide."
        else:
            reply = "Wrong.\nSCORE: 0"
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def grader_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Grader)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("final_answer", "result"),
    [
        (r"9 + 9 = \boxed{18}", JudgeResult(1.0, True, {"score": 1.0, "parse_error": 0.0})),
        (r"\boxed{17}", JudgeResult(0.0, False, {"score": 0.0, "parse_error": 0.0})),
        ("half right", JudgeResult(0.5, True, {"score": 0.5, "parse_error": 0.0})),
        ("ramble", JudgeResult(0.0, False, {"score": 0.0, "parse_error": 1.0})),
    ],
)
async def test_llm_judge_scores_by_the_graders_reply(grader_url, final_answer, result):
    judge = LLMJudge(base_url=grader_url, model="grader-1", rubric="Grade strictly.")
    assert await run_judge(judge, *episode("#### 18", final_answer)) == result
    sent = _Grader.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "grader-1" and sent["body"]["temperature"] == 0.0
    system, user = sent["body"]["messages"]
    assert system == {"role": "system", "content": "Grade strictly."}
    assert (
        "What is 9 + 9?" in user["content"]
        and "#### 18" in user["content"]
        and final_answer in user["content"]
    )


def test_llm_judge_works_from_several_event_loops(grader_url):
    judge = LLMJudge(base_url=grader_url, model="grader-1")
    for _ in range(2):
        assert asyncio.run(run_judge(judge, *episode("18", r"\boxed{18}"))).is_success


async def test_llm_judge_names_an_unreachable_endpoint():
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    judge = LLMJudge(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout_s=5)
    with pytest.raises(
        RuntimeError, match=rf"could not get a grade from http://127.0.0.1:{port}/v1 \(model 'm'\)"
    ):
        await run_judge(judge, *episode("18", "18"))


def test_llm_judge_template_must_have_its_fields():
    with pytest.raises(ValueError, match=r"must contain \{reference\}"):
        LLMJudge(base_url="http://x/v1", model="m", prompt_template="{question} {response}")


# ---------------------------------------------------------------- composite judge


async def test_composite_judge_weights_components_and_reports_each():
    async def is_short(completion):
        await asyncio.sleep(0)
        return len(completion) < 40

    judge = CompositeJudge(
        components={
            "answer": (LastNumberJudge(format_weight=0.0), 1.0),
            "format": (lambda completion: r"\boxed{" in completion, 0.2),
            "short": Component(is_short, 0.5),
            "length": (lambda completion: len(completion), 0.0),
            "has_reference": lambda reference, metadata, task: (
                reference == "18" and metadata is task.metadata
            ),
        }
    )
    result = await run_judge(judge, *episode("#### 18", r"\boxed{18}"))
    assert result.components == {
        "answer": 1.0,
        "answer/correct": 1.0,
        "answer/format": 1.0,
        "format": 1.0,
        "short": 1.0,
        "length": 10.0,
        "has_reference": 1.0,
    }
    assert result.reward == pytest.approx(1.0 + 0.2 + 0.5 + 1.0)
    assert result.is_success
    wrong = await run_judge(judge, *episode("#### 18", r"\boxed{17}"))
    assert wrong.reward == pytest.approx(0.2 + 0.5 + 1.0) and not wrong.is_success


async def test_composite_judge_success_key_and_judge_results_from_functions():
    judge = CompositeJudge(
        components={
            "bonus": (lambda: 1.0, 0.5),
            "verdict": (lambda answer: JudgeResult(0.0, answer == "yes"), 1.0),
        },
        success_key="verdict",
    )
    assert await run_judge(judge, *episode("yes", "")) == JudgeResult(
        0.5, True, {"bonus": 1.0, "verdict": 0.0}
    )
    assert not (await run_judge(judge, *episode("no", ""))).is_success


def test_composite_judge_rejects_unknown_parameters_and_names_a_failing_component():
    with pytest.raises(
        ValueError, match=r"parameter 'response' of .* is not one a component can take; use any of completion"
    ):
        CompositeJudge(components={"bad": lambda response: 1.0})
    with pytest.raises(ValueError, match="success_key 'nope' is not a component"):
        CompositeJudge(components={"a": lambda: 1.0}, success_key="nope")
    judge = CompositeJudge(components={"boom": lambda completion: 1 / 0})
    with pytest.raises(RuntimeError, match="component 'boom' failed: ZeroDivisionError"):
        asyncio.run(run_judge(judge, *episode("1", "1")))
