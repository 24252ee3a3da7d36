"""Data-parallel scaling of the learner over 1, 2, 4 GPUs on the same work, and NCCL weight-sync time to a vLLM
engine on a GPU of its own (`placement: separate`).

    python benchmarks/multi_gpu_scaling.py [--gpus 1 2 4] [--shape smollm2-135m|0.5b|tiny] [--zero-stage 2]
        [--groups 16] [--group-size 8] [--prompt-len 256] [--response-len 256] [--steps 5] [--warmup 1]
        [--no-sync] [--no-write] [--cpu]

Scaling: for each N of `--gpus` this script launches `torchrun --nproc-per-node N` on itself (NCCL_NVLS_ENABLE=0
in the children's environment); every rank builds the DeepSpeed `Learner` on a random-weight model of `--shape`
(see benchmarks/learner_throughput.py) and calls `train_step` on the same global batch of `--groups` ×
`--group-size` synthetic episodes (the trainer's contract: each rank trains its share). After `--warmup`
untimed steps, the median of `--steps` timed steps (CUDA synchronised, then a barrier) gives the step time and
sequence tokens/s = episodes × (prompt + response) / step time; speed-up and efficiency are against the
1-GPU row. Rows asking for more GPUs than this machine has are skipped, and the script says so.

Weight sync (`--no-sync` skips it; needs 2 GPUs and vLLM): the learner on GPU 0, a `VLLMEngine(weight_sync="nccl",
devices=[1])` on GPU 1; `update_weights(learner.named_weights())` (gather, pack into bf16 buckets, NCCL
broadcast, `load_weights`, prefix-cache reset) timed 4 times after one warm-up call that also sets up the group.

Results go to benchmarks/RESULTS.md (section below) only when measured on GPUs. `--cpu` is a smoke run with
gloo processes on the CPU (`--shape tiny`), printed, never written.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "Multi-GPU scaling (benchmarks/multi_gpu_scaling.py)"


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Learner step time and tokens/s on 1, 2, 4 GPUs (each row launched with torchrun "
        "--nproc-per-node N) on the same global batch, and NCCL weight-sync time to a vLLM engine on its own GPU.",
    )
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4], help="learner GPU counts, one row each")
    parser.add_argument("--shape", default="smollm2-135m", choices=["smollm2-135m", "0.5b", "tiny"])
    parser.add_argument("--zero-stage", type=int, default=2, choices=[0, 1, 2, 3])
    parser.add_argument("--groups", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--response-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row")
    parser.add_argument("--no-sync", action="store_true", help="skip the weight-sync measurement")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    parser.add_argument("--cpu", action="store_true", help="smoke run: gloo processes on the CPU, never written")
    parser.add_argument("--worker", metavar="OUT_JSON", help=argparse.SUPPRESS)  # set for the torchrun children
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- one torchrun child


def worker(args: argparse.Namespace) -> None:
    """One rank: the learner on the same global batch as every other rank; rank 0 writes the timings."""
    sys.path.insert(0, str(HERE))
    import torch
    import torch.distributed as dist
    from agent_rl.learner import Learner, LearnerConfig
    from learner_throughput import synthetic_batch

    config = LearnerConfig(zero_stage=args.zero_stage, max_tokens_per_micro_batch=4 * (args.prompt_len + args.response_len),
                           bf16=None if not args.cpu else False, lr=1e-6)
    learner = Learner(args.model_dir, config)
    vocab = learner.module.get_input_embeddings().num_embeddings
    samples = synthetic_batch(args.groups, args.group_size, args.prompt_len, args.response_len, vocab, seed=0)
    times = []
    for step in range(args.warmup + args.steps):
        dist.barrier()
        started = time.perf_counter()
        learner.train_step(samples)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        dist.barrier()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    if learner.rank == 0:
        tokens = len(samples) * (args.prompt_len + args.response_len)
        step_s = statistics.median(times)
        Path(args.worker).write_text(json.dumps({"ranks": learner.world_size, "step_s": step_s, "tokens_per_s": tokens / step_s}))


def launch(n: int, args: argparse.Namespace, model_dir: Path, out: Path) -> dict | None:
    """Run `n` ranks under torchrun; their rank 0's result, or None (with the output shown) when it failed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), __file__,
               "--worker", str(out), "--model-dir", str(model_dir), "--shape", args.shape,
               "--zero-stage", str(args.zero_stage), "--groups", str(args.groups), "--group-size", str(args.group_size),
               "--prompt-len", str(args.prompt_len), "--response-len", str(args.response_len),
               "--steps", str(args.steps), "--warmup", str(args.warmup), *(["--cpu"] if args.cpu else [])]
    env = {**os.environ}
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off in every process this starts
    if args.cpu:
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    if finished.returncode != 0 or not out.exists():
        print(f"{n} rank(s) failed (exit {finished.returncode}):\n{finished.stdout[-2000:]}\n{finished.stderr[-4000:]}", flush=True)
        return None
    return json.loads(out.read_text())


# ---------------------------------------------------------------- weight sync, separate GPUs


def measure_sync(model_dir: Path) -> dict:
    """NCCL weight sync from a one-rank learner on GPU 0 to vLLM on GPU 1: seconds per `update_weights`."""
    import asyncio

    import torch
    from agent_rl.engines.vllm import VLLMEngine
    from agent_rl.learner import Learner, LearnerConfig

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    learner = Learner(str(model_dir), LearnerConfig(zero_stage=0))
    engine = VLLMEngine(str(model_dir), weight_sync="nccl", devices=[1], gpu_memory_utilization=0.5,
                        max_model_len=2048, enable_sleep_mode=False)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(engine.update_weights(learner.named_weights()))  # warm-up; sets up the group
        times = []
        for _ in range(4):
            torch.cuda.synchronize()
            started = time.perf_counter()
            loop.run_until_complete(engine.update_weights(learner.named_weights()))
            times.append(time.perf_counter() - started)
    finally:
        engine.close()
        loop.close()
    params = sum(p.numel() for p in learner.module.parameters())
    return {"params": params, "update_weights_s": [round(t, 4) for t in times]}


# ---------------------------------------------------------------- the table


def main() -> None:
    args = _args()
    if args.worker:
        worker(args)
        return
    sys.path.insert(0, str(HERE))
    import torch
    from learner_throughput import save_random_model

    available = 0 if args.cpu else torch.cuda.device_count()
    if args.cpu:
        print("CPU smoke run: gloo processes, nothing is written to RESULTS.md", flush=True)
    rows: list[tuple[int, dict | None, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        save_random_model(args.shape, model_dir)
        for n in args.gpus:
            if not args.cpu and n > available:
                message = f"skipped: asked for {n} GPU(s), this machine has {available}"
                print(f"{n} GPU(s): {message}", flush=True)
                rows.append((n, None, message))
                continue
            result = launch(n, args, model_dir, Path(tmp) / f"ranks{n}.json")
            rows.append((n, result, "" if result else "failed (output above)"))
            if result:
                print(f"{n} rank(s): {result['step_s']:.3f} s/step, {result['tokens_per_s']:,.0f} tokens/s", flush=True)
        sync = None
        if not args.no_sync:
            try:
                import vllm  # noqa: F401

                has_vllm = True
            except ImportError:
                has_vllm = False
            if args.cpu or available < 2 or not has_vllm:
                print(f"weight sync: skipped (needs 2 GPUs and vLLM; this machine has {available} GPU(s), vLLM "
                      f"{'installed' if has_vllm else 'not installed'})", flush=True)
            else:
                sync = measure_sync(model_dir)
                print(f"weight sync (NCCL, separate GPU): {json.dumps(sync)}", flush=True)
    body = table(args, rows, sync)
    print(body, flush=True)
    if args.cpu or available == 0:
        return
    if not args.no_write:
        from _results import write_section

        os.environ.setdefault("BENCH_GPU_NAME", f"{available}× {torch.cuda.get_device_name(0)}")
        write_section(SECTION, body)


def table(args: argparse.Namespace, rows: list[tuple[int, dict | None, str]], sync: dict | None) -> str:
    base = next((r["step_s"] for n, r, _ in rows if n == 1 and r), None)
    lines = [
        f"Learner `train_step` on {args.groups}×{args.group_size} episodes of {args.prompt_len}+{args.response_len} "
        f"tokens, `{args.shape}`, ZeRO-{args.zero_stage}, median of {args.steps} steps; every rank gets the same "
        "global batch and trains its share.",
        "",
        f"| {'CPU ranks' if args.cpu else 'GPUs'} | s/step | tokens/s | speed-up | efficiency |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, result, note in rows:
        if result is None:
            lines.append(f"| {n} | {note} | | | |")
            continue
        speedup = base / result["step_s"] if base else float("nan")
        lines.append(f"| {n} | {result['step_s']:.3f} | {result['tokens_per_s']:,.0f} | {speedup:.2f}× | {speedup / n:.0%} |")
    if sync is not None:
        lines += ["", f"Weight sync to vLLM on its own GPU (NCCL broadcast of bf16 buckets, {sync['params']:,} parameters): "
                  f"{statistics.median(sync['update_weights_s']):.3f} s median of {sync['update_weights_s']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
