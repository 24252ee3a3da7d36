"""Rollout throughput on a GPU: the collector against raw `vllm.LLM.generate` on the same work.

    python benchmarks/rollout_throughput.py [--concurrency 64 512] [--tokens 256] [--no-write]

Single-turn rows: N arithmetic prompts (the `agent_env/Completion-v0` env over the built-in `easy` tasks),
each forced to `--tokens` generated tokens (`ignore_eos`), temperature 1, logprobs on, SmolLM2-135M-Instruct
(the embedded model). `raw` is `vllm.LLM.generate` on the rendered prompts; `collector` is our
`RolloutCollector` with `VLLMEngine` (AsyncLLM) driving N env episodes at once. Multi-turn row: MathAgent-v0
episodes (ReActAgent + sandboxed python tool + math judge) with natural lengths, and vLLM's prefix-cache hit
rate. Each measurement runs in its own process so that GPU memory starts clean. Target (issue 4): collector
>= 80% of raw at 512 concurrent episodes on one H100.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MAX_MODEL_LEN = 2048
EAGER = os.environ.get("BENCH_EAGER") == "1"
"""BENCH_EAGER=1 runs both raw vLLM and our engine without CUDA graphs / torch.compile (faster start-up)."""


def _tasks(n: int):
    from agent_env.tasks.arithmetic import ArithmeticTasks

    return list(ArithmeticTasks(level="easy", split="train", n=n))


def _completion_env():
    import agent_env

    return agent_env.make("agent_env/Completion-v0", tasks=_tasks(1), reward_fns=[lambda completions, **_: [0.0]])


def run_raw(n: int, tokens: int) -> dict:
    from agent_rl.embedded_model import embedded_model_dir
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams, TokensPrompt

    model = embedded_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [tokenizer.apply_chat_template(t.init_messages, add_generation_prompt=True, tokenize=False) for t in _tasks(n)]
    prompts = [TokensPrompt(prompt_token_ids=tokenizer.encode(text, add_special_tokens=False)) for text in texts]
    llm = LLM(model=model, gpu_memory_utilization=0.5, max_model_len=MAX_MODEL_LEN, max_num_seqs=max(n, 64),
              enable_prefix_caching=True, logprobs_mode="processed_logprobs", seed=0, enforce_eager=EAGER)
    params = SamplingParams(temperature=1.0, max_tokens=tokens, ignore_eos=True, logprobs=0, seed=None)
    llm.generate(prompts[: min(8, n)], params, use_tqdm=False)  # warm-up
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - started
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"generated": generated, "elapsed_s": elapsed, "tokens_per_s": generated / elapsed}


def run_collector(n: int, tokens: int) -> dict:
    from agent_rl.embedded_model import embedded_model_dir
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.vllm import VLLMEngine
    from agent_rl.rollout.collector import RolloutCollector, RolloutLimits

    engine = VLLMEngine(embedded_model_dir(), gpu_memory_utilization=0.5, max_model_len=MAX_MODEL_LEN,
                        max_num_seqs=max(n, 64), enable_sleep_mode=False, weight_sync="none", enforce_eager=EAGER)
    limits = RolloutLimits(max_prompt_length=512, max_response_length=tokens, max_response_length_in_one_turn=tokens, max_model_len=MAX_MODEL_LEN)
    sampling = SamplingParams(temperature=1.0, max_tokens=tokens, ignore_eos=True)
    collector = RolloutCollector(_completion_env, engine, engine_tokenizer(), sampling, limits=limits, max_concurrency=n)
    tasks = _tasks(n)
    submitted, finished = [], []
    generate = engine.generate

    async def timed_generate(prompt_ids, params=None):  # when each request reached the engine and came back
        submitted.append(time.perf_counter())
        try:
            return await generate(prompt_ids, params)
        finally:
            finished.append(time.perf_counter())

    engine.generate = timed_generate

    async def main() -> dict:
        await collector.collect(tasks[: min(8, n)], 1)  # warm-up
        submitted.clear(), finished.clear()
        started = time.perf_counter()
        batch = await collector.collect(tasks, 1)
        metrics = batch.metrics()
        return {"generated": metrics["tokens/generated"], "elapsed_s": batch.elapsed_s, "tokens_per_s": metrics["tokens/generated_per_s"],
                "failed": metrics["rollout/failed_episodes"], "first_submit_s": min(submitted) - started,
                "last_submit_s": max(submitted) - started, "first_return_s": min(finished) - started,
                "last_return_s": max(finished) - started}

    try:
        return asyncio.run(main())
    finally:
        engine.close()


def run_multiturn(n: int, tokens: int) -> dict:
    import agent_env
    from agent_rl.embedded_model import embedded_model_dir
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.vllm import VLLMEngine
    from agent_rl.rollout.collector import RolloutCollector, RolloutLimits

    engine = VLLMEngine(embedded_model_dir(), gpu_memory_utilization=0.5, max_model_len=MAX_MODEL_LEN,
                        max_num_seqs=max(n, 64), enable_sleep_mode=False, weight_sync="none", disable_log_stats=False, enforce_eager=EAGER)
    limits = RolloutLimits(max_prompt_length=1024, max_response_length=1024, max_response_length_in_one_turn=tokens, max_model_len=MAX_MODEL_LEN)
    collector = RolloutCollector(lambda: agent_env.make("agent_env/MathAgent-v0"), engine, engine_tokenizer(),
                                 SamplingParams(temperature=1.0, max_tokens=tokens), limits=limits, max_concurrency=n)
    tasks = _tasks(n // 4)

    async def main() -> dict:
        await collector.collect(tasks[:4], 1)  # warm-up: imports, sandbox workers, judge workers
        hits0, queries0 = prefix_cache_counters()
        batch = await collector.collect(tasks, 4)
        hits1, queries1 = prefix_cache_counters()
        metrics = batch.metrics()
        return {"episodes": len(batch.episodes), "elapsed_s": batch.elapsed_s, "episodes_per_s": len(batch.episodes) / batch.elapsed_s,
                "tokens_per_s": metrics["tokens/generated_per_s"], "turns_mean": metrics["rollout/turns_mean"],
                "fallback_samples": metrics["rollout/fallback_samples"], "failed": metrics["rollout/failed_episodes"],
                "reward_mean": metrics["reward/mean"],
                "prefix_cache_hit_rate": (hits1 - hits0) / (queries1 - queries0) if queries1 > queries0 else None}

    try:
        return asyncio.run(main())
    finally:
        engine.close()


def engine_tokenizer():
    from agent_rl.embedded_model import embedded_model_dir
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir())


def prefix_cache_counters() -> tuple[float, float]:
    """vLLM's prefix-cache hit and query token counters (Prometheus, recorded in this process)."""
    from vllm.v1.metrics.reader import Counter, get_metrics_snapshot

    hits = queries = 0.0
    for metric in get_metrics_snapshot():
        if isinstance(metric, Counter) and metric.name.endswith("prefix_cache_hits"):
            hits += metric.value
        elif isinstance(metric, Counter) and metric.name.endswith("prefix_cache_queries"):
            queries += metric.value
    return hits, queries


MODES = {"raw": run_raw, "collector": run_collector, "multiturn": run_multiturn}


def measure(mode: str, n: int, tokens: int) -> dict:
    """Run one measurement in a fresh process; its last stdout line is the JSON result."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, __file__, "--worker", mode, "--n", str(n), "--tokens", str(tokens)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-6000:])
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--multiturn-episodes", type=int, default=512)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(MODES[args.worker](args.n, args.tokens)))
        return

    rows, results = [], {}
    for n in args.concurrency:
        raw, ours = measure("raw", n, args.tokens), measure("collector", n, args.tokens)
        results[n] = {"raw": raw, "collector": ours}
        ratio = ours.get("tokens_per_s", 0) / raw["tokens_per_s"] if raw.get("tokens_per_s") else float("nan")
        rows.append(f"| {n} | {args.tokens} | {raw.get('tokens_per_s', 0):,.0f} | {ours.get('tokens_per_s', 0):,.0f} | {ratio:.0%} |")
        print(rows[-1], flush=True)
    multi = measure("multiturn", args.multiturn_episodes, 256) if args.multiturn_episodes > 0 else {}
    results["multiturn"] = multi
    print(json.dumps(results, indent=1))
    hit = multi.get("prefix_cache_hit_rate")
    table = "\n".join([
        "| concurrent episodes | tokens each | raw `vllm.LLM.generate` tok/s | collector + `VLLMEngine` tok/s | collector / raw |",
        "|---:|---:|---:|---:|---:|", *rows, "",
        "| multi-turn MathAgent-v0 | episodes | episodes/s | generated tok/s | turns/episode | prefix-cache hit rate | fallback samples |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| ReActAgent + python tool, ≤256 tok/turn | {multi.get('episodes', 0)} | {multi.get('episodes_per_s', 0):.1f} | "
        f"{multi.get('tokens_per_s', 0):,.0f} | {multi.get('turns_mean', 0):.2f} | {'n/a' if hit is None else f'{hit:.0%}'} | "
        f"{multi.get('fallback_samples', 'n/a')} |",
    ])
    if not args.no_write:
        from _results import write_section

        write_section("Rollout throughput (benchmarks/rollout_throughput.py)",
                      table + "\n\nSmolLM2-135M-Instruct (embedded), bf16, vLLM 0.26.0. Command: `python benchmarks/rollout_throughput.py`.\n")
    print(table)


if __name__ == "__main__":
    main()
