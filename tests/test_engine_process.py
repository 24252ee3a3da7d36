"""`EngineProcess`: a real engine (the HF engine on the tiny random Llama) built and run in a spawned child process."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch
from agent_rl.embedded_model import tiny_random_model_dir
from agent_rl.engines.base import EngineClosedError, SamplingParams
from agent_rl.engines.hf import HFEngine
from agent_rl.engines.process import EngineProcess, EngineProcessError

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
PROMPTS = [[1, 2, 3], [5, 8, 13, 21], [4, 4]]


@pytest.fixture(scope="module")
def hosted():
    engine = EngineProcess("agent_rl.engines.hf:HFEngine", model=tiny_random_model_dir(), device="cpu", dtype="float32", seed=0)
    yield engine
    engine.close()


def in_process(state_dict=None) -> HFEngine:
    engine = HFEngine(tiny_random_model_dir(), device="cpu", dtype="float32", seed=0)
    if state_dict is not None:
        engine.model.load_state_dict(state_dict)
    return engine


async def greedy_tokens(engine, prompts=PROMPTS):
    completions = await asyncio.gather(*(engine.generate(p, GREEDY) for p in prompts))
    return [c[0].token_ids for c in completions]


def test_the_child_generates_what_the_engine_generates_in_this_process(hosted):
    local = in_process()
    try:
        assert asyncio.run(greedy_tokens(hosted)) == asyncio.run(greedy_tokens(local))
    finally:
        local.close()
    assert hosted.max_model_len == local.max_model_len
    # sampling params travel whole: n, logprobs, and the request's seed
    seeded = SamplingParams(temperature=1.0, max_tokens=6, n=3, seed=7, ignore_eos=True)
    first, again = (asyncio.run(hosted.generate([1, 2, 3], seeded)) for _ in range(2))
    assert len(first) == 3 and all(len(c.token_ids) == len(c.logprobs) == 6 for c in first)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]


def test_calls_from_another_thread_and_its_loop_are_answered_there(hosted):
    results = {}

    def other_thread() -> None:
        results["other"] = asyncio.run(greedy_tokens(hosted, PROMPTS[:1]))

    thread = threading.Thread(target=other_thread)
    thread.start()
    results["main"] = asyncio.run(greedy_tokens(hosted, PROMPTS[:1]))
    thread.join(timeout=60)
    assert results["other"] == results["main"] and len(results["main"][0]) == 8


def test_updated_weights_reach_the_child_engine(hosted):
    torch.manual_seed(1)
    perturbed = {name: value + 0.05 * torch.randn_like(value) for name, value in in_process().model.state_dict().items()}
    before = asyncio.run(greedy_tokens(hosted))
    asyncio.run(hosted.update_weights(perturbed))
    local = in_process(perturbed)
    try:
        after = asyncio.run(greedy_tokens(hosted))
        assert after == asyncio.run(greedy_tokens(local)) and after != before
    finally:
        local.close()


def test_an_error_in_the_child_comes_back_with_its_traceback_and_the_engine_serves_on(hosted):
    too_long = SamplingParams(temperature=0.0, max_tokens=1)
    with pytest.raises(EngineProcessError) as caught:
        asyncio.run(hosted.generate([1] * (hosted.max_model_len + 10), too_long))
    assert "In the engine process" in str(caught.value) and "Traceback" in str(caught.value)
    with pytest.raises(EngineProcessError, match="AttributeError"):
        asyncio.run(hosted.call("no_such_method"))
    assert len(asyncio.run(greedy_tokens(hosted, PROMPTS[:1]))[0]) == 8


def test_a_cancelled_call_is_cancelled_in_the_child_which_serves_on(hosted):
    async def cancel_a_long_call():
        long = asyncio.ensure_future(hosted.generate([1, 2, 3], SamplingParams(max_tokens=100_000, ignore_eos=True)))
        await asyncio.sleep(0.5)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        return await asyncio.wait_for(greedy_tokens(hosted, PROMPTS[:1]), timeout=120)

    assert len(asyncio.run(cancel_a_long_call())[0]) == 8


def test_a_failing_build_is_raised_by_the_constructor():
    with pytest.raises(EngineProcessError, match="Building agent_rl.engines.hf:HFEngine"):
        EngineProcess("agent_rl.engines.hf:HFEngine", model="/nonexistent/model-dir", device="cpu")


def test_a_dead_child_fails_pending_and_later_calls_with_engine_closed():
    engine = EngineProcess("agent_rl.engines.hf:HFEngine", model=tiny_random_model_dir(), device="cpu", seed=0)

    async def pending_call_then_kill():
        call = asyncio.ensure_future(engine.generate([1, 2, 3], SamplingParams(max_tokens=10_000, ignore_eos=True)))
        await asyncio.sleep(0.5)
        engine._process.kill()
        return await call

    with pytest.raises(EngineClosedError, match="exit code"):
        asyncio.run(pending_call_then_kill())
    with pytest.raises(EngineClosedError):
        asyncio.run(engine.generate([1, 2, 3], GREEDY))
    engine.close()
    engine.close()  # twice is fine
    with pytest.raises(EngineClosedError, match="closed"):
        asyncio.run(engine.generate([1, 2, 3], GREEDY))


def test_close_sees_the_child_exit_while_the_answer_reader_sees_the_pipe_end(caplog):
    # the child's exit ends the pipe and the process at once; only close() may reap it (two threads reaping a child
    # race, and the loser took a dead child for a live one: "did not exit within 60 s", then terminate())
    for _ in range(3):
        engine = EngineProcess("agent_rl.engines.hf:HFEngine", model=tiny_random_model_dir(), device="cpu", seed=0)
        assert asyncio.run(engine.generate([1, 2, 3], GREEDY))[0].token_ids
        engine.close()
        assert engine._process.exitcode == 0
    assert "did not exit" not in caplog.text
