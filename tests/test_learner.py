"""The DeepSpeed `Learner` on the CPU (gloo) with the tiny random SmolLM2 twin: batching, schedule, updates,
one rank against two, ZeRO-3 weight gathering, LoRA, and checkpoint resume.

In-process tests run the learner in a process group of one (the learner starts it); the two-rank test spawns
two processes with their own MASTER_PORT from `worker_port_base`. The first DeepSpeed start compiles a small
op once per machine (cached under TORCH_EXTENSIONS_DIR, ~/.cache/torch_extensions by default).
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from agent_rl.learner import Learner, LearnerConfig, LoraSettings
from agent_rl.learner.batching import (
    assign_to_ranks,
    collate,
    padded_tokens,
    plan_micro_batches,
    split_mini_batches,
)
from agent_rl.learner.schedule import warmup_cosine
from agent_rl.rollout.samples import TrainingSample


def make_batch(seed: int = 0, groups: int = 4, repeats: int = 4) -> list[TrainingSample]:
    """A rollout-shaped batch: `groups` tasks × `repeats` episodes, mixed rewards, some tokens not trained."""
    rng = random.Random(seed)
    samples = []
    for g in range(groups):
        prompt = [rng.randrange(100, 2000) for _ in range(rng.randrange(6, 18))]
        for e in range(repeats):
            n = rng.randrange(3, 20)
            mask = [0 if rng.random() < 0.2 else 1 for _ in range(n)]
            mask[0] = 1
            samples.append(
                TrainingSample(
                    task_id=f"task{g}",
                    group_id=f"g{g}",
                    episode_id=f"g{g}e{e}",
                    sample_index=0,
                    prompt_ids=list(prompt),
                    response_ids=[rng.randrange(100, 2000) for _ in range(n)],
                    loss_mask=mask,
                    logprobs=[0.0] * n,
                    reward=float(e % 2 == g % 2) + 0.1 * e,
                )
            )
    return samples


def with_engine_logprobs(learner: Learner, samples: list[TrainingSample]) -> list[TrainingSample]:
    """Give the samples the logprobs an engine sampling from the learner's policy would have reported."""
    for sample, logprobs in zip(samples, learner.compute_logprobs(samples), strict=True):
        sample.logprobs = [lp if m else 0.0 for lp, m in zip(logprobs, sample.loss_mask, strict=True)]
    return samples


@pytest.fixture(scope="module")
def tiny_model() -> str:
    from agent_rl.embedded_model import tiny_random_model_dir

    return tiny_random_model_dir()


# ---------------------------------------------------------------- batching, schedule, config (no DeepSpeed)


def test_micro_batches_respect_the_token_budget_and_cover_every_sample():
    samples = make_batch(groups=6)
    batches = plan_micro_batches(samples, range(len(samples)), max_tokens=120)
    assert sorted(i for b in batches for i in b) == list(range(len(samples)))
    assert all(padded_tokens(samples, b) <= 120 or len(b) == 1 for b in batches)
    assert len(batches) > 3


def test_a_sample_longer_than_the_budget_gets_a_micro_batch_of_its_own():
    samples = make_batch()
    batches = plan_micro_batches(samples, range(len(samples)), max_tokens=5)
    assert all(len(b) == 1 for b in batches) and len(batches) == len(samples)


def test_ranks_get_balanced_micro_batches_deterministically():
    samples = make_batch(groups=6)
    batches = plan_micro_batches(samples, range(len(samples)), max_tokens=150)
    per_rank = assign_to_ranks(samples, batches, world_size=2)
    assert per_rank == assign_to_ranks(samples, batches, world_size=2)
    loads = [sum(padded_tokens(samples, b) for b in rank) for rank in per_rank]
    assert abs(loads[0] - loads[1]) <= max(padded_tokens(samples, b) for b in batches)
    assert sorted(map(sorted, (b for rank in per_rank for b in rank))) == sorted(map(sorted, batches))


def test_collate_aligns_every_response_at_the_same_column():
    samples = make_batch()[:3]
    samples[1].prompt_ids = samples[1].prompt_ids[:4]
    micro = collate(samples, [0, 1, 2], [0.5, -1.0, 2.0])
    prompt_len = max(len(s.prompt_ids) for s in samples)
    for row, sample in enumerate(samples):
        n = len(sample.response_ids)
        assert micro.input_ids[row, prompt_len : prompt_len + n].tolist() == sample.response_ids
        assert micro.targets[row, :n].tolist() == sample.response_ids
        assert micro.loss_mask[row, :n].tolist() == sample.loss_mask and micro.loss_mask[row, n:].sum() == 0
        first = prompt_len - len(sample.prompt_ids)
        assert micro.attention_mask[row, :first].sum() == 0
        assert micro.position_ids[row, first : first + 3].tolist() == [0, 1, 2]
    assert micro.advantages.flatten().tolist() == [0.5, -1.0, 2.0]
    assert micro.logits_to_keep == max(len(s.response_ids) for s in samples) + 1


def test_collate_rejects_a_sample_whose_lists_disagree():
    sample = make_batch()[0]
    sample.logprobs = sample.logprobs[:-1]
    with pytest.raises(ValueError, match="one per token"):
        collate([sample], [0], [0.0])


def test_mini_batches_split_the_batch_into_contiguous_parts():
    assert split_mini_batches(7, 3) == [[0, 1], [2, 3, 4], [5, 6]]
    with pytest.raises(ValueError, match="mini_batches between 1 and"):
        split_mini_batches(2, 3)


def test_warmup_then_cosine_schedule():
    assert [warmup_cosine(s, 4, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(9, 4, 14) == pytest.approx(0.5)
    assert warmup_cosine(14, 4, 14, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(50, 4, 14, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(50, 0, None) == 1.0


def test_every_config_field_is_documented():
    for model in (LearnerConfig, LoraSettings):
        undocumented = [name for name, field in model.model_fields.items() if not field.description]
        assert undocumented == [], f"{model.__name__} fields without a description: {undocumented}"


def test_config_rejects_inconsistent_choices_and_says_what_to_set():
    with pytest.raises(ValueError, match="set max_response_length"):
        LearnerConfig(loss_aggregation="dr_grpo")
    with pytest.raises(ValueError, match="set zero_stage to 0, 1 or 2"):
        LearnerConfig(lora=LoraSettings(), zero_stage=3)
    with pytest.raises(ValueError, match="set zero_stage to 0, 1 or 2, or torch_compile to false"):
        LearnerConfig(torch_compile=True, zero_stage=3)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        LearnerConfig(learning_rate=1e-5)


# ---------------------------------------------------------------- one rank, in this process


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16-autocast"])
def test_first_update_has_ratio_exactly_one_and_moves_logprobs_along_the_advantage(tiny_model, precision):
    # bf16 on the CPU too: bf16 weights, float32 master copy in the optimizer (the default where the CPU has AMX);
    # or float32 weights under bf16 autocast (the default on a GPU)
    bf16, autocast = precision != "fp32", precision == "bf16-autocast"
    config = LearnerConfig(bf16=bf16, bf16_autocast=autocast, lr=1e-2, max_tokens_per_micro_batch=150, grad_clip=0.0)
    learner = Learner(tiny_model, config)
    assert next(learner.module.parameters()).dtype == (torch.bfloat16 if bf16 and not autocast else torch.float32)
    samples = with_engine_logprobs(learner, make_batch())
    before = learner.compute_logprobs(samples)
    metrics = learner.train_step(samples)
    assert metrics["learner/ratio/min"] == 1.0 and metrics["learner/ratio/max"] == 1.0
    assert metrics["learner/clip_fraction/low"] == 0.0 and metrics["learner/clip_fraction/high"] == 0.0
    assert metrics["learner/tis/weight_mean"] == pytest.approx(1.0, abs=2e-2 if bf16 else 1e-6)
    assert metrics["learner/updates"] == 1 and learner.step == 1
    # one thread's CPU time cannot exceed the wall time it ran for
    assert 0 < metrics["timing/learner/thread_cpu_s"] <= metrics["timing/learner/step_s"] + 1e-3
    assert 0 < metrics["learner/entropy"] <= math.log(49152) + 1e-3
    after = learner.compute_logprobs(samples)

    from agent_rl.grpo import episode_advantages

    advantages, _ = episode_advantages(samples)
    moves = {1: [], -1: []}
    for sample, advantage, old, new in zip(samples, advantages, before, after, strict=True):
        delta = sum((n - o) * m for o, n, m in zip(old, new, sample.loss_mask, strict=True)) / sum(
            sample.loss_mask
        )
        moves[1 if advantage > 0 else -1].append(delta)
    assert sum(moves[1]) / len(moves[1]) > 0 > sum(moves[-1]) / len(moves[-1])
    # and the loss on this fixed batch went down: the clipped surrogate at the new policy, against the old one
    from agent_rl.grpo import grpo_loss

    loss_at = {}
    for label, logprobs in (("before", before), ("after", after)):
        loss_at[label] = sum(
            grpo_loss(
                torch.tensor([new]),
                torch.tensor([old]),
                torch.tensor([[a]]),
                torch.tensor([s.loss_mask]),
                num_tokens=metrics["learner/trained_tokens"],
            ).loss.item()
            for s, a, old, new in zip(samples, advantages, before, logprobs, strict=True)
        )
    assert loss_at["before"] == pytest.approx(metrics["learner/loss"], rel=1e-2 if bf16 else 1e-5)
    assert loss_at["after"] < loss_at["before"]


@pytest.mark.slow
def test_checkpoint_resumes_identical_optimizer_state(tiny_model, tmp_path):
    config = LearnerConfig(
        bf16=False, lr=1e-3, warmup_steps=3, total_steps=10, max_tokens_per_micro_batch=200, mini_batches=2
    )
    samples = make_batch(seed=1)
    first = Learner(tiny_model, config)
    with_engine_logprobs(first, samples)
    first.train_step(samples)
    saved = first.save_checkpoint(tmp_path / "step_2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_2"]  # no temporary directory left behind

    resumed = Learner(tiny_model, config)
    resumed.load_checkpoint(saved)
    assert resumed.step == first.step == 2
    assert resumed.scheduler.get_last_lr() == first.scheduler.get_last_lr()
    state_a, state_b = first.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert state_a.keys() == state_b.keys() and len(state_a) > 0
    for key in state_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state_a[key][name], state_b[key][name]), (key, name)
    metrics_a, metrics_b = first.train_step(samples), resumed.train_step(samples)
    assert (
        metrics_a["learner/loss"] == metrics_b["learner/loss"]
        and metrics_a["learner/lr"] == metrics_b["learner/lr"]
    )
    weights_a, weights_b = first.state_dict_for_sync(), resumed.state_dict_for_sync()
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)

    # the directory is a plain Hugging Face model with its tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert json.loads((saved / "learner_state.json").read_text())["step"] == 2
    assert AutoTokenizer.from_pretrained(saved).eos_token == "<|im_end|>"
    hf = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32).state_dict()
    with pytest.raises(FileNotFoundError, match="Learner.save_checkpoint"):
        resumed.load_checkpoint(tmp_path)
    assert torch.equal(
        hf["model.layers.0.mlp.up_proj.weight"],
        Learner(saved, config).state_dict_for_sync()["model.layers.0.mlp.up_proj.weight"],
    )


@pytest.mark.slow
def test_lora_trains_adapters_and_syncs_merged_weights_under_hf_names(tiny_model):
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).state_dict()
    config = LearnerConfig(
        bf16=False, lr=1e-2, beta=0.04, zero_stage=2, lora=LoraSettings(r=4, target_modules=["q_proj", "v_proj"])
    )
    learner = Learner(tiny_model, config)
    trainable = [name for name, p in learner.module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    metrics = learner.train_step(with_engine_logprobs(learner, make_batch(seed=2)))
    assert metrics["learner/kl"] == pytest.approx(0.0, abs=1e-6)  # the first update starts at the reference
    metrics = learner.train_step(with_engine_logprobs(learner, make_batch(seed=2)))
    assert metrics["learner/kl"] > 0
    synced = learner.state_dict_for_sync()
    assert {name: tuple(t.shape) for name, t in synced.items()} == {
        name: tuple(t.shape) for name, t in initial.items()
    }
    assert not torch.equal(
        synced["model.layers.0.self_attn.q_proj.weight"], initial["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        synced["model.layers.0.self_attn.k_proj.weight"], initial["model.layers.0.self_attn.k_proj.weight"]
    )


# ---------------------------------------------------------------- two ranks, spawned


TWO_RANK_CONFIGS = {
    "zero0": dict(zero_stage=0),
    "zero2": dict(zero_stage=2),
    "zero3_checkpointing": dict(zero_stage=3, gradient_checkpointing=True),
}
COMMON = dict(bf16=False, lr=1e-3, max_tokens_per_micro_batch=100, mini_batches=2, num_iterations=2, tis_cap=2.0)
TWO_RANK_BATCH = dict(seed=3, groups=5)


def _run(learner: Learner) -> dict:
    samples = with_engine_logprobs(learner, make_batch(**TWO_RANK_BATCH))
    steps = [learner.train_step(samples) for _ in range(2)]
    return {
        "loss": [m["learner/loss"] for m in steps],
        "grad_norm": [m["learner/grad_norm"] for m in steps],
        "ratio_max": [m["learner/ratio/max"] for m in steps],
        "weights": learner.state_dict_for_sync(),
        "bucketed_names": [name for name, _ in learner.named_weights(bucket_numel=10_000)],
    }


def _two_rank_worker(rank: int, port: int, model: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    results = {}
    for name, extra in TWO_RANK_CONFIGS.items():
        learner = Learner(model, LearnerConfig(**COMMON, **extra))
        results[name] = _run(learner)
    # the last (ZeRO-3) learner saves from both ranks, then resumes from what they wrote
    checkpoint = learner.save_checkpoint(Path(out) / "checkpoint")
    learner.step = 0
    learner.load_checkpoint(checkpoint)
    results["resumed_step"] = learner.step
    torch.save(results, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_ranks_match_one_rank_and_zero3_gathers_full_weights(tiny_model, tmp_path, worker_port_base):
    import torch.multiprocessing as mp

    samples = make_batch(**TWO_RANK_BATCH)
    counts = [len(r) for r in assign_to_ranks(samples, plan_micro_batches(samples, range(10), 100), 2)]
    assert counts[0] != counts[1]  # so one rank runs a padding micro-batch to keep ZeRO's collectives in step
    mp.start_processes(
        _two_rank_worker,
        args=(worker_port_base + 1, tiny_model, str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    reference = _run(Learner(tiny_model, LearnerConfig(**COMMON)))

    from transformers import AutoModelForCausalLM

    hf_shapes = {
        n: tuple(t.shape) for n, t in AutoModelForCausalLM.from_pretrained(tiny_model).state_dict().items()
    }
    for name in TWO_RANK_CONFIGS:
        for rank in ranks:
            result = rank[name]
            assert result["loss"] == pytest.approx(reference["loss"], rel=1e-5), name
            assert result["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-4), name
            assert {n: tuple(t.shape) for n, t in result["weights"].items()} == hf_shapes, name
            assert result["bucketed_names"] == list(hf_shapes), name
            for param, value in result["weights"].items():
                torch.testing.assert_close(
                    value, reference["weights"][param], rtol=1e-4, atol=1e-6, msg=f"{name} {param}"
                )
        # the gathered weights are the same on every rank
        for param, value in ranks[0][name]["weights"].items():
            assert torch.equal(value, ranks[1][name]["weights"][param]), (name, param)
    assert max(reference["ratio_max"]) > 1.0  # later updates were off-policy: the multi-update path ran
    # the two-rank ZeRO-3 checkpoint is a Hugging Face model holding the gathered weights, and resumes
    assert ranks[0]["resumed_step"] == ranks[1]["resumed_step"] == 8
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint", dtype=torch.float32).state_dict()
    for param, value in ranks[0]["zero3_checkpointing"]["weights"].items():
        assert torch.equal(saved[param], value), param
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_the_learner_clips_the_gradients_it_steps_on_and_reports_their_norm_before_clipping(tiny_model, autocast):
    # without ZeRO or DeepSpeed's bf16 mode the learner clips (fused kernels); DeepSpeed is told not to
    learner = Learner(tiny_model, LearnerConfig(bf16=autocast, bf16_autocast=autocast, lr=1e-3, grad_clip=1e-3))
    assert learner._ds_config["gradient_clipping"] == 0.0
    stepped_on, step = [], learner.engine.step

    def step_and_record(*args, **kwargs):
        grads = [p.grad for p in learner.module.parameters() if p.grad is not None]
        stepped_on.append(float(torch.nn.utils.get_total_norm(grads)))
        return step(*args, **kwargs)

    learner.engine.step = step_and_record
    metrics = learner.train_step(with_engine_logprobs(learner, make_batch()))
    assert metrics["learner/grad_norm"] > 100 * 1e-3
    assert stepped_on == [pytest.approx(1e-3, rel=1e-3)]


@pytest.mark.slow
def test_bf16_autocast_under_zero_2_and_3_trains_like_without_zero(tiny_model):
    # autocast is the default only without ZeRO; asked for under ZeRO, DeepSpeed runs it (`torch_autocast`) on
    # float32 weights and its ZeRO optimizer clips, and the numbers stay those of the learner without ZeRO
    float32 = Learner(tiny_model, LearnerConfig(bf16=False, max_tokens_per_micro_batch=150))
    float32_logprobs = float32.compute_logprobs(make_batch())
    runs = {}
    for stage in (0, 2, 3):
        learner = Learner(tiny_model, LearnerConfig(bf16=True, bf16_autocast=True, zero_stage=stage, lr=1e-3,
                                                    max_tokens_per_micro_batch=150, grad_clip=1.0))
        assert next(learner.module.parameters()).dtype == torch.float32
        assert learner._ds_config["gradient_clipping"] == (0.0 if stage == 0 else 1.0)
        samples = make_batch()
        logprobs = learner.compute_logprobs(samples)
        steps = [learner.train_step(with_engine_logprobs(learner, samples)) for _ in range(2)]
        assert steps[0]["learner/ratio/min"] == steps[0]["learner/ratio/max"] == 1.0
        runs[stage] = logprobs, [m["learner/loss"] for m in steps], [m["learner/grad_norm"] for m in steps]
    for stage in (2, 3):
        assert runs[stage][0] == runs[0][0]  # the same bf16 forward pass
        assert runs[stage][1] == pytest.approx(runs[0][1], rel=1e-2)
        assert runs[stage][2] == pytest.approx(runs[0][2], rel=1e-2)
    assert float32_logprobs != runs[0][0]  # and bf16 it is: without autocast the same weights score differently


@pytest.mark.slow
def test_kl_to_a_frozen_copy_of_the_initial_weights(tiny_model):
    learner = Learner(tiny_model, LearnerConfig(bf16=False, lr=1e-2, beta=0.1))
    samples = with_engine_logprobs(learner, make_batch(seed=4))
    first = learner.train_step(samples)
    assert first["learner/kl"] == 0.0  # π_θ is the reference until the first update
    second = learner.train_step(with_engine_logprobs(learner, samples))
    assert second["learner/kl"] > 0
    assert all(not p.requires_grad for p in learner.reference.parameters())


def test_single_update_scores_pi_old_in_its_own_pass_with_the_same_entropy(tiny_model):
    """One update per batch skips the separate scoring pass; the entropy of π_old it reports is the one the
    scoring pass of a two-iteration learner measures on the same weights and batch."""
    import copy

    samples = make_batch()
    one = Learner(copy.deepcopy(tiny_model), LearnerConfig(bf16=False, lr=1e-3, max_tokens_per_micro_batch=150))
    two = Learner(copy.deepcopy(tiny_model), LearnerConfig(bf16=False, lr=1e-3, max_tokens_per_micro_batch=150, num_iterations=2))
    single, double = one.train_step(samples), two.train_step(samples)
    assert single["learner/entropy"] == pytest.approx(double["learner/entropy"], rel=1e-5)
    assert single["learner/ratio/max"] == 1.0 and single["learner/updates"] == 1 and double["learner/updates"] == 2


@pytest.mark.slow
def test_compiled_decoder_layers_train_like_eager_ones(tiny_model):
    """`torch_compile` compiles each decoder layer in place and trains to the same losses and policy as eager
    layers (float32), over micro-batches of varying shapes (dynamic shapes, no recompile per shape)."""
    results = {}
    for compiled in (False, True):
        config = LearnerConfig(bf16=False, lr=1e-2, max_tokens_per_micro_batch=150, torch_compile=compiled)
        learner = Learner(tiny_model, config)
        layers = [m for m in learner.module.modules() if getattr(m, "_compiled_call_impl", None) is not None]
        assert len(layers) == (learner.module.config.num_hidden_layers if compiled else 0)
        torch._dynamo.utils.counters.clear()
        losses = [learner.train_step(make_batch(seed=seed))["learner/loss"] for seed in (0, 1)]
        results[compiled] = losses, learner.compute_logprobs(make_batch(seed=2))
        # one graph for every layer and shape (training, plus one for no-grad scoring), not one per layer or shape
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert (1 <= graphs <= 3) if compiled else graphs == 0
        if compiled:  # an HF engine sharing the compiled module decodes eagerly: no graph per cache length
            import asyncio

            from agent_rl.engines.base import SamplingParams
            from agent_rl.engines.hf import HFEngine

            engine = HFEngine(learner.module, tiny_model, seed=0)
            try:
                [completion] = asyncio.run(engine.generate([1, 2, 3], SamplingParams(max_tokens=6, ignore_eos=True)))
            finally:
                engine.close()
            assert len(completion.token_ids) == 6
            assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    (eager_losses, eager_logprobs), (compiled_losses, compiled_logprobs) = results[False], results[True]
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-7)
    for eager_row, compiled_row in zip(eager_logprobs, compiled_logprobs, strict=True):
        assert compiled_row == pytest.approx(eager_row, abs=1e-4)
