"""The vLLM engine on a GPU (skipped where vLLM or CUDA is missing, as in CI): the same contract as the HF engine."""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("vllm")
if not torch.cuda.is_available():
    pytest.skip("the vLLM engine needs a CUDA GPU", allow_module_level=True)

from agent_rl.embedded_model import embedded_model_dir  # noqa: E402
from agent_rl.engines.base import SamplingParams  # noqa: E402
from agent_rl.engines.vllm import VLLMEngine  # noqa: E402

LOOP = asyncio.new_event_loop()  # AsyncLLM serves the event loop it first ran on: use one loop for the module


def run(coro):
    return LOOP.run_until_complete(coro)


@pytest.fixture(scope="module")
def engine():
    engine = VLLMEngine(embedded_model_dir(), dtype="float32", gpu_memory_utilization=0.3, max_model_len=2048, seed=0, enforce_eager=True)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(embedded_model_dir(), dtype=torch.float32).cuda().eval()


def prompt(engine_tokenizer_dir=None) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 + 5?"}], add_generation_prompt=True, tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def teacher_forced_logprobs(model, prompt_ids, completion_ids, temperature):
    ids = torch.tensor([prompt_ids + completion_ids], device="cuda")
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion_ids, device="cuda")[:, None])[:, 0].tolist()


def test_logprobs_are_those_of_the_temperature_scaled_distribution(engine, hf_model):
    ids = prompt()
    completions = run(engine.generate(ids, SamplingParams(temperature=0.7, max_tokens=48, n=4, seed=1)))
    assert len(completions) == 4
    for completion in completions:
        expected = torch.tensor(teacher_forced_logprobs(hf_model, ids, completion.token_ids, 0.7))
        difference = (torch.tensor(completion.logprobs) - expected).abs()
        # vLLM's kernels (TF32 matmuls, its own attention) differ from HF's eager fp32 forward by up to ~1e-2 per
        # token on this model; a wrong temperature or unprocessed logprobs would be off by ~0.3 or more.
        assert difference.max() < 2e-2 and difference.mean() < 3e-3


def test_length_limit_stop_strings_and_ignore_eos(engine):
    ids = prompt()
    (cut,) = run(engine.generate(ids, SamplingParams(temperature=1.0, max_tokens=256, ignore_eos=True, seed=3)))
    assert len(cut.token_ids) == 256 and cut.finish_reason == "length"
    (greedy,) = run(engine.generate(ids, SamplingParams(temperature=0.0, max_tokens=64)))
    assert greedy.finish_reason in ("stop", "length")


def test_text_is_the_decoded_tokens_and_stop_strings_cut_it(engine):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    ids = prompt()
    # no stop strings: vLLM does not detokenize, the engine decodes each completion once
    (plain,) = run(engine.generate(ids, SamplingParams(temperature=1.0, max_tokens=40, seed=5)))
    assert plain.text and plain.text == tokenizer.decode(plain.token_ids, skip_special_tokens=True)
    # a stop string (vLLM detokenizes to find it): the text ends before it, the tokens end with the one that made it
    stop = plain.text.split()[1]
    (cut,) = run(engine.generate(ids, SamplingParams(temperature=1.0, max_tokens=40, seed=5, stop=(stop,))))
    assert cut.finish_reason == "stop" and cut.stop_reason == stop
    assert stop not in cut.text and plain.text.startswith(cut.text)
    assert cut.token_ids == plain.token_ids[: len(cut.token_ids)]


def test_update_weights_changes_outputs_and_restores_them(engine, hf_model):
    ids = prompt()
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    (before,) = run(engine.generate(ids, greedy))
    state = {name: tensor.clone() for name, tensor in hf_model.state_dict().items()}
    noisy = {name: tensor + 0.05 * torch.randn_like(tensor) if tensor.dim() == 2 else tensor for name, tensor in state.items()}
    run(engine.update_weights(noisy))
    (changed,) = run(engine.generate(ids, greedy))
    run(engine.update_weights(state))
    (after,) = run(engine.generate(ids, greedy))
    assert changed.token_ids != before.token_ids
    assert after.token_ids == before.token_ids


def test_sleep_and_wake_up_keep_the_weights(engine):
    ids = prompt()
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    (before,) = run(engine.generate(ids, greedy))
    run(engine.sleep(1))
    run(engine.wake_up())
    (after,) = run(engine.generate(ids, greedy))
    assert after.token_ids == before.token_ids
