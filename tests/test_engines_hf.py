"""HFEngine and the InferenceEngine data types: exact logprobs, batching, stops, seeds, weights, lifecycle."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch
from agent_rl.chat_template import get_chat_template, render_prompt_ids
from agent_rl.embedded_model import embedded_model_dir, tiny_random_model_dir
from agent_rl.engines import Completion, EngineClosedError, HFEngine, InferenceEngine, SamplingParams
from agent_rl.engines.sampling import processed_logprobs
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

PROMPTS = [[1, 4093, 198, *range(100, 100 + k)] for k in (3, 11, 26)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two xdist workers on two cores: more than one intra-op thread each only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_engine():
    engine = HFEngine(tiny_random_model_dir(), seed=0, dtype=torch.float32)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def smol_engine():
    engine = HFEngine(embedded_model_dir(), seed=0, dtype=torch.float32)
    yield engine
    engine.close()


def teacher_forced_logprobs(
    model, prompt: list[int], completion: Completion, params: SamplingParams
) -> torch.Tensor:
    """Logprobs of the completion's tokens from one unpadded forward pass over prompt + completion."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion.token_ids])).logits[0, len(prompt) - 1 : -1]
    logprobs = processed_logprobs(logits, params.temperature, params.top_k, params.top_p)
    return logprobs.gather(1, torch.tensor(completion.token_ids).unsqueeze(1)).squeeze(1)


async def test_hf_engine_satisfies_the_protocol(tiny_engine):
    assert isinstance(tiny_engine, InferenceEngine)
    assert tiny_engine.max_model_len == 8192


async def test_logprobs_of_batched_samples_match_a_teacher_forced_forward(tiny_engine):
    params = [
        SamplingParams(temperature=0.7, top_k=50, top_p=0.9, max_tokens=12, n=2, ignore_eos=True),
        SamplingParams(temperature=1.3, max_tokens=7, ignore_eos=True),
        SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True),
    ]
    results = await asyncio.gather(
        *(tiny_engine.generate(p, q) for p, q in zip(PROMPTS, params, strict=True))
    )
    assert [len(r) for r in results] == [2, 1, 1]
    for prompt, request_params, completions in zip(PROMPTS, params, results, strict=True):
        for completion in completions:
            assert len(completion.logprobs) == len(completion.token_ids) == request_params.max_tokens
            expected = teacher_forced_logprobs(tiny_engine.model, prompt, completion, request_params)
            torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)


async def test_greedy_logprobs_are_those_of_the_raw_logits(tiny_engine):
    [completion] = await tiny_engine.generate(
        PROMPTS[0], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    )
    with torch.no_grad():
        logits = tiny_engine.model(torch.tensor([PROMPTS[0] + completion.token_ids])).logits[
            0, len(PROMPTS[0]) - 1 : -1
        ]
    raw = logits.log_softmax(-1)
    assert completion.token_ids == raw.argmax(-1).tolist()
    torch.testing.assert_close(
        torch.tensor(completion.logprobs),
        raw.gather(1, raw.argmax(-1, keepdim=True)).squeeze(1),
        atol=1e-4,
        rtol=0,
    )


async def test_requests_arriving_together_run_as_one_batch(tiny_engine):
    calls: list[int] = []
    handle = tiny_engine.model.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        params = SamplingParams(temperature=1.0, max_tokens=4, ignore_eos=True)
        results = await asyncio.gather(*(tiny_engine.generate(p, params) for p in PROMPTS * 2))
    finally:
        handle.remove()
    assert all(len(r[0].token_ids) == 4 for r in results)
    assert len(calls) == 4  # one prefill + three decode steps for all six requests


async def test_n_samples_of_a_seeded_request_are_reproducible_and_distinct(tiny_engine):
    params = SamplingParams(temperature=1.0, max_tokens=6, n=3, seed=7, ignore_eos=True)
    alone = await tiny_engine.generate(PROMPTS[1], params)
    # The same request again, now batched with another one: its samples do not depend on its neighbours.
    together, _ = await asyncio.gather(
        tiny_engine.generate(PROMPTS[1], params),
        tiny_engine.generate(PROMPTS[2], SamplingParams(temperature=1.0, max_tokens=9, ignore_eos=True)),
    )
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert len({tuple(c.token_ids) for c in alone}) == 3
    other_seed = await tiny_engine.generate(PROMPTS[1], SamplingParams(temperature=1.0, max_tokens=6, seed=8))
    assert other_seed[0].token_ids != alone[0].token_ids


async def test_max_tokens_ends_with_length(tiny_engine):
    [completion] = await tiny_engine.generate(PROMPTS[0], SamplingParams(max_tokens=3, ignore_eos=True))
    assert (len(completion.token_ids), completion.finish_reason, completion.stop_reason) == (
        3,
        "length",
        None,
    )


async def test_stop_token_id_ends_the_completion_and_is_kept(tiny_engine):
    greedy = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    [reference] = await tiny_engine.generate(PROMPTS[2], greedy)
    stop_token = reference.token_ids[3]
    first = reference.token_ids.index(stop_token)
    [stopped] = await tiny_engine.generate(
        PROMPTS[2],
        SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, stop_token_ids=(stop_token,)),
    )
    assert stopped.token_ids == reference.token_ids[: first + 1]
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", stop_token)


async def test_stop_string_cuts_the_text_but_keeps_every_sampled_token(tiny_engine):
    tokenizer = tiny_engine.tokenizer
    sampled = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True, seed=5)  # seeded: replayable
    [reference] = await tiny_engine.generate(PROMPTS[1], sampled)
    full_text = tokenizer.decode(reference.token_ids, skip_special_tokens=True)
    start = next(
        i
        for i in range(4, len(full_text) - 3)
        if full_text[i : i + 3].isascii() and full_text[i : i + 3].isalnum()
    )
    stop = full_text[start : start + 3]
    completing = next(
        k for k in range(1, 17) if stop in tokenizer.decode(reference.token_ids[:k], skip_special_tokens=True)
    )
    [stopped] = await tiny_engine.generate(PROMPTS[1], dataclasses.replace(sampled, stop=(stop,)))
    assert stopped.token_ids == reference.token_ids[:completing]
    assert stopped.text == full_text[: full_text.find(stop)]
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", stop)


async def test_cancelling_one_request_leaves_the_others_running(tiny_engine):
    params = SamplingParams(temperature=1.0, max_tokens=40, ignore_eos=True)
    doomed = asyncio.ensure_future(tiny_engine.generate(PROMPTS[0], params))
    survivor = asyncio.ensure_future(tiny_engine.generate(PROMPTS[1], params))
    await asyncio.sleep(0.05)
    doomed.cancel()
    [completion] = await survivor
    assert len(completion.token_ids) == 40
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_update_weights_copies_tensors_by_name_and_rejects_unknown_names():
    engine = HFEngine(tiny_random_model_dir(), seed=0, dtype=torch.float32)
    try:
        params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
        [before] = await engine.generate(PROMPTS[0], params)
        new_norm = torch.full_like(engine.model.model.norm.weight, 3.0)
        new_head = torch.randn_like(engine.model.lm_head.weight)
        await engine.update_weights({"model.norm.weight": new_norm})
        await engine.update_weights([("lm_head.weight", new_head)])  # tied with the embeddings
        assert torch.equal(engine.model.model.norm.weight, new_norm)
        assert torch.equal(engine.model.model.embed_tokens.weight, new_head)
        [after] = await engine.generate(PROMPTS[0], params)
        assert after.logprobs != before.logprobs
        with pytest.raises(KeyError, match="does not have"):
            await engine.update_weights({"model.not_a_layer.weight": new_norm})
        with pytest.raises(ValueError, match="shape"):
            await engine.update_weights({"model.norm.weight": new_norm[:3]})
    finally:
        engine.close()


async def test_sleep_blocks_generate_until_wake_up():
    engine = HFEngine(tiny_random_model_dir(), seed=0, dtype=torch.float32)
    try:
        await engine.sleep()
        with pytest.raises(RuntimeError, match="wake_up"):
            await engine.generate(PROMPTS[0], SamplingParams(max_tokens=2))
        await engine.wake_up()
        [completion] = await engine.generate(PROMPTS[0], SamplingParams(max_tokens=2, ignore_eos=True))
        assert len(completion.token_ids) == 2
    finally:
        engine.close()


async def test_close_aborts_running_requests_and_is_idempotent():
    engine = HFEngine(tiny_random_model_dir(), seed=0, dtype=torch.float32)
    running = asyncio.ensure_future(
        engine.generate(PROMPTS[0], SamplingParams(max_tokens=5000, ignore_eos=True))
    )
    await asyncio.sleep(0.2)
    engine.close()
    engine.close()
    [completion] = await running
    assert completion.finish_reason == "abort" and 0 < len(completion.token_ids) < 5000
    with pytest.raises(EngineClosedError):
        await engine.generate(PROMPTS[0], SamplingParams(max_tokens=2))


async def test_a_prompt_that_fills_the_context_is_rejected_with_the_limit():
    engine = HFEngine(tiny_random_model_dir(), max_model_len=16)
    try:
        with pytest.raises(ValueError, match="max_model_len is 16"):
            await engine.generate(list(range(100, 116)), SamplingParams(max_tokens=2))
        [completion] = await engine.generate(
            list(range(100, 112)), SamplingParams(max_tokens=50, ignore_eos=True)
        )
        assert (len(completion.token_ids), completion.finish_reason) == (4, "length")
    finally:
        engine.close()


@pytest.mark.slow
async def test_smollm2_ends_its_turn_with_im_end_which_is_kept_with_its_logprob(smol_engine):
    tokenizer = smol_engine.tokenizer
    messages = [
        {"role": "system", "content": "Solve the problem. Put the final answer in \\boxed{}."},
        {"role": "user", "content": "What is 14 + 12?"},
    ]
    prompt = render_prompt_ids(tokenizer, get_chat_template(tokenizer), messages)
    params = SamplingParams(temperature=0, max_tokens=48)
    [completion] = await smol_engine.generate(prompt, params)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert completion.finish_reason == "stop"
    assert completion.token_ids[-1] == im_end and im_end not in completion.token_ids[:-1]
    assert "<|im_end|>" not in completion.text and "26" in completion.text
    expected = teacher_forced_logprobs(smol_engine.model, prompt, completion, params)
    torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)
    # ignore_eos: the end-of-turn token is sampled like any other and generation goes on
    [longer] = await smol_engine.generate(
        prompt, SamplingParams(temperature=0, max_tokens=len(completion.token_ids) + 3, ignore_eos=True)
    )
    assert longer.token_ids[: len(completion.token_ids)] == completion.token_ids
    assert longer.finish_reason == "length"


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, 0, 1.0), (0.6, 5, 1.0), (1.4, 0, 0.8), (0.8, 7, 0.5), (1.0, 1, 1.0)],
)
def test_processed_logprobs_match_transformers_logits_warpers(temperature, top_k, top_p):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 3
    reference = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        reference = TopKLogitsWarper(top_k)(None, reference)
    if top_p < 1:
        reference = TopPLogitsWarper(top_p)(None, reference)
    torch.testing.assert_close(
        processed_logprobs(logits, temperature, top_k, top_p), reference.log_softmax(-1)
    )


def test_processed_logprobs_leave_greedy_rows_unscaled_and_unfiltered():
    logits = torch.randn(2, 20, generator=torch.Generator().manual_seed(1))
    out = processed_logprobs(logits, torch.tensor([0.0, 0.5]), torch.tensor([3, 3]), torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(out[0], logits[0].log_softmax(-1))
    assert torch.isfinite(out[1]).sum() == 3


def test_inverse_cdf_draws_follow_the_distribution_and_never_pick_a_filtered_token():
    from agent_rl.engines.sampling import sample_from_logprobs

    logits = torch.randn(1, 12, generator=torch.Generator().manual_seed(2)) * 2
    logprobs = processed_logprobs(logits, 0.9, 6, 1.0).expand(40_000, -1)  # 6 tokens left, the rest -inf
    tokens = sample_from_logprobs(logprobs, torch.rand(40_000, generator=torch.Generator().manual_seed(3)))
    counts = torch.bincount(tokens, minlength=12).double() / 40_000
    expected = logprobs[0].exp().double()
    assert set(tokens.unique().tolist()) <= set(torch.nonzero(expected > 0).flatten().tolist())
    assert torch.allclose(counts, expected, atol=0.01)  # 4 standard deviations of a count at p = 0.5 is 0.01
    # the ends of [0, 1) (and 1 itself, which rounding can reach): the first and the last token of probability > 0
    edges = sample_from_logprobs(logprobs[:3], torch.tensor([0.0, 1.0 - 2**-24, 1.0]))
    positive = torch.nonzero(expected > 0).flatten()
    assert edges.tolist() == [positive[0].item(), positive[-1].item(), positive[-1].item()]
    # the same uniforms give the same tokens
    assert torch.equal(sample_from_logprobs(logprobs[:100], torch.linspace(0, 0.99, 100)),
                       sample_from_logprobs(logprobs[:100], torch.linspace(0, 0.99, 100)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0, "n": 2}, "identical completions"),
        ({"top_p": 0.0}, "top_p must be in"),
        ({"top_k": -2}, "top_k must be"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"stop": ("",)}, "non-empty"),
    ],
)
def test_sampling_params_reject_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)


def test_sampling_params_normalise_stop_and_disabled_top_k():
    params = SamplingParams(stop="###", stop_token_ids=[5], top_k=-1)
    assert (params.stop, params.stop_token_ids, params.top_k) == (("###",), (5,), 0)


def test_vllm_engine_without_vllm_says_what_to_install():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vLLM is installed here")
    from agent_rl.engines import VLLMEngine

    with pytest.raises(ImportError, match=r"pip install 'agent-rl\[vllm\]'"):
        VLLMEngine("embedded:SmolLM2-135M-Instruct")


async def test_a_model_shared_with_a_learner_keeps_its_training_mode_and_weights():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_random_model_dir(), attention_dropout=0.5).train()
    engine = HFEngine(model, tiny_random_model_dir(), seed=0)
    try:
        params = SamplingParams(temperature=1.0, max_tokens=5, ignore_eos=True)
        [completion] = await engine.generate(PROMPTS[0], params)
        assert model.training and all(p.requires_grad for p in model.parameters())
        model.eval()
        expected = teacher_forced_logprobs(model, PROMPTS[0], completion, params)  # sampled without dropout
        torch.testing.assert_close(torch.tensor(completion.logprobs), expected, atol=1e-4, rtol=0)
        with pytest.raises(ValueError, match="outside the model's vocabulary"):
            await engine.generate([1, 49152], params)
    finally:
        engine.close()
