"""Learner throughput: tokens/s and MFU of `Learner.train_step` on synthetic GRPO batches, one process.

    python benchmarks/learner_throughput.py [--shape 0.5b|smollm2-135m|tiny] [--zero-stage 0 2 3]
        [--dtype bf16|fp32] [--gradient-checkpointing] [--torch-compile] [--steps 5] [--plain-pytorch] [--no-write]

The model is a random-weight causal LM of a known shape, built from a config written here (no hub access),
saved to a temporary directory and loaded by the `Learner` from that path, as a run would load a checkpoint
(under ZeRO-3 it is partitioned while it loads). Shapes: `0.5b` is Qwen2.5-0.5B (24 layers, hidden 896,
vocab 151,936, tied embeddings), `smollm2-135m` is the embedded SmolLM2-135M-Instruct, `tiny` is a 2-layer
model for a CPU smoke run.

One rollout batch is `--groups` × `--group-size` episodes of exactly `--prompt-len` prompt and `--response-len`
response tokens (random ids, no padding), every response token trained, engine logprobs -1.0, rewards varying
within each group so that every advantage is non-zero. After `--warmup` untimed steps, `--steps` timed
`train_step` calls (CUDA synchronised) give the median step time and:

- sequence tokens/s = episodes × (prompt + response) / step time (rollout tokens consumed per second);
- trained tokens/s = response tokens / step time;
- MFU = model FLOPs of the step / (step time × peak FLOP/s).

Model FLOPs of one step (matmuls only; biases, norms, softmax ignored; the recompute of gradient checkpointing
not counted, as MFU defines it). For one row of S = P + R tokens a forward costs

    F = 2·N·S + 2·V·H·(R + 1) + 4·L·A·S²

with N the non-embedding parameters, V·H the output head (the learner computes logits only for the R + 1
positions that predict response tokens: `logits_to_keep`), L layers and A = heads × head_dim (PaLM's attention
term, causal mask not discounted; 12·L·A·S per token for forward + backward). A forward hook on the model counts
the passes the learner really makes: a forward with gradients (an update) costs 3F with its backward, a no-grad
forward (the old-logprob scoring pass, which the learner runs only when a batch gets more than one update,
mini_batches × num_iterations > 1) costs F. Step FLOPs = Σ over those passes and their rows.

`--plain-pytorch` adds a row: the same update in a minimal PyTorch loop (float32 weights, bf16 autocast, fused
AdamW, no DeepSpeed, no metrics), the floor the learner's own overhead is measured against; its FLOPs are the
learner's first row's.

Peak: 989 TFLOP/s (dense bf16) for H100 SXM and H200, 756 for H100 PCIe; other GPUs and fp32 need
`--peak-tflops`; on the CPU MFU is n/a.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _results import write_section  # noqa: E402
from agent_rl.learner import Learner, LearnerConfig  # noqa: E402
from agent_rl.rollout.samples import TrainingSample  # noqa: E402

SECTION = "Learner throughput (benchmarks/learner_throughput.py)"
SHAPES = ("0.5b", "smollm2-135m", "tiny")
PEAK_TFLOPS_BF16 = (("H100 PCIE", 756.0), ("H100", 989.0), ("H200", 989.0))
"""Dense bf16 tensor-core peaks (no sparsity) by a substring of `torch.cuda.get_device_name()`, first match wins."""


def model_config(shape: str):
    """The `transformers` config of `shape` (see the module docstring)."""
    import transformers

    if shape == "0.5b":  # Qwen2.5-0.5B(-Instruct)'s config.json
        return transformers.Qwen2Config(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
            rope_theta=1e6,
            rms_norm_eps=1e-6,
            hidden_act="silu",
            use_sliding_window=False,
        )
    if shape == "smollm2-135m":  # the embedded SmolLM2-135M-Instruct's config
        return transformers.LlamaConfig(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            vocab_size=49152,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            rope_parameters={"rope_theta": 100000.0, "rope_type": "default"},
            rms_norm_eps=1e-5,
            hidden_act="silu",
        )
    if shape == "tiny":
        return transformers.Qwen2Config(
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=4096,
            max_position_embeddings=4096,
            tie_word_embeddings=True,
        )
    raise ValueError(f"Unknown shape {shape!r}: choose one of {', '.join(SHAPES)}.")


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP count needs: non-embedding parameters, head size, layers and attention width."""

    non_embedding_params: int
    vocab_size: int
    hidden_size: int
    num_layers: int
    attention_width: int  # heads × head_dim

    def forward_flops(self, sequence_len: int, logits_kept: int) -> float:
        """Matmul FLOPs of one forward of one row of `sequence_len` tokens, logits for its last `logits_kept` only."""
        s = sequence_len
        return (
            2.0 * self.non_embedding_params * s
            + 2.0 * self.vocab_size * self.hidden_size * logits_kept
            + 4.0 * self.num_layers * self.attention_width * s * s
        )


class PassCounter:
    """A forward pre-hook that adds up the model FLOPs of every forward call: 3F with gradients, F without."""

    def __init__(self, shape: ModelShape) -> None:
        self.shape = shape
        self.flops = 0.0
        self.passes = {"forward+backward": 0, "no-grad forward": 0}

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        rows, width = input_ids.shape
        kept = kwargs.get("logits_to_keep") or width
        kept = kept if isinstance(kept, int) else len(kept)
        grad = torch.is_grad_enabled()
        self.flops += (3.0 if grad else 1.0) * rows * self.shape.forward_flops(width, kept)
        self.passes["forward+backward" if grad else "no-grad forward"] += 1


def save_random_model(shape: str, directory: Path) -> ModelShape:
    """Write a random-weight model of `shape` (seed 0, bf16 on disk: the learner loads float32) to `directory`."""
    from transformers import AutoModelForCausalLM

    config = model_config(shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters())  # tied head counted once
    non_embedding = total - embedding.numel() - (0 if head is embedding else head.numel())
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    model.to(torch.bfloat16).save_pretrained(directory)
    del model
    return ModelShape(
        non_embedding_params=non_embedding,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        attention_width=config.num_attention_heads * head_dim,
    )


def synthetic_batch(
    groups: int, group_size: int, prompt_len: int, response_len: int, vocab_size: int, seed: int
) -> list[TrainingSample]:
    """`groups` × `group_size` samples of random ids; rewards 0..group_size-1 within a group (non-zero advantages)."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for g in range(groups):
        for k in range(group_size):
            ids = torch.randint(0, vocab_size, (prompt_len + response_len,), generator=generator).tolist()
            samples.append(
                TrainingSample(
                    task_id=f"task{g}",
                    group_id=f"group{g}",
                    episode_id=f"task{g}-{k}",
                    sample_index=0,
                    prompt_ids=ids[:prompt_len],
                    response_ids=ids[prompt_len:],
                    loss_mask=[1] * response_len,
                    logprobs=[-1.0] * response_len,
                    reward=float(k % group_size) / max(group_size - 1, 1),
                )
            )
    return samples


def peak_flops(device: str, dtype: str, override_tflops: float | None) -> float | None:
    """Peak FLOP/s for MFU: `--peak-tflops` if given; the bf16 table for known GPUs; else None (MFU n/a)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device == "cpu" or dtype != "bf16":
        return None
    name = device.upper()
    return next((tflops * 1e12 for key, tflops in PEAK_TFLOPS_BF16 if key in name), None)


@dataclass
class RunResult:
    zero_stage: int
    step_s: float
    score_s: float
    update_s: float
    sequence_tokens_per_s: float
    trained_tokens_per_s: float
    tflops_per_s: float
    mfu: float | None
    peak_memory_gib: float | None
    passes: dict[str, float]


def profile_step(learner: Any, batch: list[Any], out: Path, cuda: bool) -> None:
    """One more `train_step` under `torch.profiler`: the ops that took the most time, by self time, to `out`
    (untimed; for finding where a step goes, not for the table)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, record_shapes=False) as prof:
        learner.train_step(batch)
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(prof.key_averages().table(sort_by=sort, row_limit=40) + "\n\nby CPU self time:\n"
                   + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40))
    print(f"  profile of one step: {out}", flush=True)


def precision_label(args: argparse.Namespace, zero_stage: int) -> str:
    """`fp32`, `bf16 autocast` (float32 weights) or `bf16 weights` (DeepSpeed's bf16 mode), as the learner resolved it."""
    from agent_rl.learner.engine_setup import use_bf16_autocast

    if args.dtype != "bf16":
        return args.dtype
    config = LearnerConfig(bf16=True, bf16_autocast=False if args.bf16_weights else None, zero_stage=zero_stage)
    return "bf16 autocast" if use_bf16_autocast(config) else "bf16 weights"


def plain_pytorch_step_s(model_dir: Path, args: argparse.Namespace) -> float:
    """Median seconds of the same GRPO update in a minimal PyTorch loop, as the floor our `Learner` is held to:
    the model in float32 on the device with bf16 autocast (float32 master weights, as the learner keeps), the same
    token-budget micro-batches, `token_logprobs` and `grpo_loss`, gradient clipping, `torch.optim.AdamW` (fused on
    a GPU). No DeepSpeed, no metrics, no host syncs beyond the loss. One update per batch (π_old = this pass)."""
    from agent_rl.grpo import episode_advantages, grpo_loss, token_logprobs
    from agent_rl.learner.batching import collate, plan_micro_batches
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=cuda)
    batch = synthetic_batch(args.groups, args.group_size, args.prompt_len, args.response_len, model.config.vocab_size, 0)
    advantages, _ = episode_advantages(batch, "group", 1e-4)
    micro_batches = [collate(batch, indices, advantages).to(device)
                     for indices in plan_micro_batches(batch, range(len(batch)), args.micro_batch_tokens)]
    num_tokens = sum(float(m.loss_mask.sum()) for m in micro_batches)

    def step() -> None:
        for micro in micro_batches:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
                logits = model(input_ids=micro.input_ids, attention_mask=micro.attention_mask, position_ids=micro.position_ids,
                               logits_to_keep=micro.logits_to_keep, use_cache=False).logits
            logps = token_logprobs(logits, micro.targets)
            grpo_loss(logps, logps.detach(), micro.advantages, micro.loss_mask, num_tokens=num_tokens).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = []
    for index in range(args.warmup + args.steps):
        started = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if index >= args.warmup:
            times.append(time.perf_counter() - started)
    print(f"  plain PyTorch: {' '.join(f'{t:.3f}' for t in times)} s", flush=True)
    return statistics.median(times)


def run_one(
    model_dir: Path, shape: ModelShape, args: argparse.Namespace, zero_stage: int, peak: float | None
) -> RunResult:
    """Build a `Learner` at `zero_stage`, warm it up, time `args.steps` train_steps, then release it."""
    cuda = torch.cuda.is_available()
    config = LearnerConfig(
        lr=1e-6,
        zero_stage=zero_stage,
        bf16=args.dtype == "bf16",
        gradient_checkpointing=args.gradient_checkpointing,
        torch_compile=args.torch_compile,
        bf16_autocast=False if args.bf16_weights else None,
        max_tokens_per_micro_batch=args.micro_batch_tokens,
        mini_batches=args.mini_batches,
        num_iterations=args.num_iterations,
        attn_implementation=args.attn,
    )
    leftover = torch.cuda.memory_allocated() if cuda else 0  # from an earlier stage of this process, if any
    learner = Learner(str(model_dir), config)
    counter = PassCounter(shape)
    learner.module.register_forward_pre_hook(counter, with_kwargs=True)
    batches = [
        synthetic_batch(
            args.groups, args.group_size, args.prompt_len, args.response_len, shape.vocab_size, seed
        )
        for seed in range(2)
    ]
    for step in range(args.warmup):
        learner.train_step(batches[step % 2])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    counter.flops, counter.passes = 0.0, dict.fromkeys(counter.passes, 0)
    times, scores, updates, grad_norms = [], [], [], []
    for step in range(args.steps):
        started = time.perf_counter()
        metrics = learner.train_step(batches[step % 2])
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        scores.append(metrics["timing/learner/score_s"])
        updates.append(metrics["timing/learner/update_s"])
        grad_norms.append(metrics["learner/grad_norm"])
        print(
            f"  ZeRO-{zero_stage} step {step + 1}/{args.steps}: {times[-1]:.3f} s "
            f"(score {scores[-1]:.3f} s, update {updates[-1]:.3f} s), grad norm {grad_norms[-1]:.3g}",
            flush=True,
        )
    memory = (torch.cuda.max_memory_allocated() - leftover) / 2**30 if cuda else None
    flops, passes = counter.flops / args.steps, {name: count / args.steps for name, count in counter.passes.items()}
    if args.profile:  # after the count: the profiled step is not one of the timed ones
        profile_step(learner, batches[0], Path(args.profile) / f"learner_profile_zero{zero_stage}.txt", cuda)
    learner.engine.destroy()
    del learner
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    episodes = args.groups * args.group_size
    step_s = statistics.median(times)
    return RunResult(
        zero_stage=zero_stage,
        step_s=step_s,
        score_s=statistics.median(scores),
        update_s=statistics.median(updates),
        sequence_tokens_per_s=episodes * (args.prompt_len + args.response_len) / step_s,
        trained_tokens_per_s=episodes * args.response_len / step_s,
        tflops_per_s=flops / step_s / 1e12,
        mfu=flops / step_s / peak if peak else None,
        peak_memory_gib=memory,
        passes=passes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="0.5b")
    parser.add_argument(
        "--zero-stage",
        type=int,
        nargs="+",
        choices=(0, 1, 2, 3),
        default=[0],
        help="one row per stage, run one after the other in this process",
    )
    parser.add_argument(
        "--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on a GPU, fp32 on the CPU"
    )
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--torch-compile", action="store_true",
                        help="the learner's torch_compile: compiled decoder layers (compiled in the warm-up steps)")
    parser.add_argument("--bf16-weights", action="store_true",
                        help="bf16: DeepSpeed's bf16 mode (bf16 weights, float32 master copy), not the GPU default "
                             "(float32 weights under autocast; the default on a CPU)")
    parser.add_argument(
        "--attn",
        default=None,
        help="attn_implementation (sdpa, flash_attention_2, ...); default: transformers' choice",
    )
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--response-len", type=int, default=256)
    parser.add_argument(
        "--micro-batch-tokens",
        type=int,
        default=LearnerConfig().max_tokens_per_micro_batch,
        help="max_tokens_per_micro_batch of the learner",
    )
    parser.add_argument("--mini-batches", type=int, default=1)
    parser.add_argument("--num-iterations", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2, help="untimed train_steps first")
    parser.add_argument("--steps", type=int, default=5, help="timed train_steps (the median is reported)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak FLOP/s of the device in TFLOP/s for MFU (default: 989 for H100 SXM/H200 bf16)",
    )
    parser.add_argument("--no-write", action="store_true", help="print the table without updating RESULTS.md")
    parser.add_argument("--plain-pytorch", action="store_true",
                        help="also time the same update in a minimal PyTorch loop (no DeepSpeed): the floor to compare with")
    parser.add_argument("--profile", metavar="DIR", help="also profile one step per ZeRO stage (torch.profiler tables into DIR)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0.")

    cuda = torch.cuda.is_available()
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    device = torch.cuda.get_device_name() if cuda else "cpu"
    peak = peak_flops(device, args.dtype, args.peak_tflops)
    if cuda and peak is None:
        print(f"No known {args.dtype} peak for {device}: MFU is n/a (pass --peak-tflops).", flush=True)

    with tempfile.TemporaryDirectory(prefix="learner-throughput-") as tmp:
        started = time.perf_counter()
        shape = save_random_model(args.shape, Path(tmp))
        print(
            f"{args.shape}: {shape.non_embedding_params / 1e6:.1f}M non-embedding parameters, head "
            f"{shape.vocab_size}×{shape.hidden_size}, saved in {time.perf_counter() - started:.1f} s; device {device}",
            flush=True,
        )
        results = [run_one(Path(tmp), shape, args, stage, peak) for stage in args.zero_stage]
        plain_s = plain_pytorch_step_s(Path(tmp), args) if args.plain_pytorch else None

    episodes = args.groups * args.group_size
    rows = []
    for r in results:
        memory = f"{r.peak_memory_gib:.1f}" if r.peak_memory_gib is not None else "n/a"
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        rows.append(
            f"| {args.shape} | {r.zero_stage} | {precision_label(args, r.zero_stage)}{', compiled' if args.torch_compile else ''} | "
            f"{'on' if args.gradient_checkpointing else 'off'} | "
            f"{r.step_s:.3f} | {r.score_s:.3f} | {r.update_s:.3f} | {r.sequence_tokens_per_s:,.0f} | "
            f"{r.trained_tokens_per_s:,.0f} | {r.tflops_per_s:.3g} | {mfu} | {memory} |"
        )
    if plain_s is not None:
        flops = results[0].tflops_per_s * results[0].step_s * 1e12  # the same passes: one forward+backward per micro-batch
        mfu = f"{100 * flops / plain_s / peak:.1f}%" if peak else "n/a"
        rows.append(
            f"| {args.shape} | plain PyTorch | {args.dtype} | off | {plain_s:.3f} | – | {plain_s:.3f} | "
            f"{episodes * (args.prompt_len + args.response_len) / plain_s:,.0f} | {episodes * args.response_len / plain_s:,.0f} | "
            f"{flops / plain_s / 1e12:.3g} | {mfu} | – |"
        )
    table = "\n".join(
        [
            "| shape | ZeRO | dtype | grad ckpt | step s | score s | update s | sequence tok/s | trained tok/s | model TFLOP/s | MFU | peak GPU mem GiB |",
            "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
        ]
    )
    passes = ", ".join(f"{count:g} {name}" for name, count in results[0].passes.items() if count)
    peak_text = f"{peak / 1e12:.0f} TFLOP/s" if peak else "n/a"
    note = (
        f"Device: {device}; one process, DeepSpeed, client AdamW. Batch: {args.groups} groups × {args.group_size} "
        f"episodes of {args.prompt_len} prompt + {args.response_len} response tokens ({episodes} sequences, "
        f"{episodes * (args.prompt_len + args.response_len):,} tokens, no padding), micro-batches of ≤ "
        f"{args.micro_batch_tokens:,} tokens, {args.mini_batches} mini-batch(es) × {args.num_iterations} "
        f"iteration(s); median of {args.steps} timed steps after {args.warmup} warm-up steps. Random weights.\n"
        f"Model forward calls per step (counted by a hook): {passes}. Model FLOPs per step = Σ over those calls "
        f"of rows × c · [2·N·S + 2·V·H·(R+1) + 4·L·A·S²], c = 3 with backward, 1 for a no-grad scoring pass "
        f"(N = {shape.non_embedding_params / 1e6:.1f}M non-embedding parameters, head V·H only on the R+1 "
        f"positions that predict the response, A = heads × head_dim, S = P + R; recompute of gradient "
        f"checkpointing not counted); MFU = model FLOP/s / peak ({peak_text}). Score s and update s are the "
        f"learner's own `timing/learner/*` (old-logprob pass; forward/backward + optimizer steps); peak GPU memory "
        f"is `torch.cuda.max_memory_allocated` over the timed steps (weights, optimizer state, activations).\n"
        f"Command: `python benchmarks/learner_throughput.py {' '.join(a for a in sys.argv[1:] if a != '--no-write')}`.\n"
    )
    print(table)
    print(note)
    if not args.no_write:
        write_section(SECTION, table + "\n\n" + note)


if __name__ == "__main__":
    main()
