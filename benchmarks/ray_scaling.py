"""Episodes on Ray: MathAgent-v0 episodes/s with 1..N env actors, and the cost of a step through Ray.

    uv run python benchmarks/ray_scaling.py [--workers 1 2] [--episodes 256] [--concurrency 64] [--no-write]
    uv run python benchmarks/ray_scaling.py --workers 1 2 4 8 16      # a 16-core host
    uv run python benchmarks/ray_scaling.py --address auto --workers 8  # a running cluster (`ray start`)

The policy is scripted and answers at once (`agent_env.demo.scripted_math_policy`: one python tool call, then
the boxed answer), so the env side is all there is to measure: the ReActAgent, the sandboxed python tool and the
math judge. Throughput: `--episodes` episodes, `--concurrency` at once, on one event loop in this process (the
baseline) and spread over W `EnvHost` actors of one CPU each. Step overhead: one episode at a time, median
`astep` latency through one actor minus in process, for MathAgent-v0 and for a workflow that only calls the
model (there the whole step is overhead: a Ray round trip plus pickling the observation).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import agent_env  # noqa: E402
from _results import write_section  # noqa: E402
from agent_env import AgentEnv, Task, Workflow, WorkflowOutput  # noqa: E402
from agent_env.demo import scripted_math_policy  # noqa: E402
from agent_rl.rollout.ray_envs import RayEnvPool, connect  # noqa: E402

MATH_AGENT = "agent_env/MathAgent-v0"
TURNS = 4
TASKS = agent_env.make(MATH_AGENT).tasks


class ModelOnly(Workflow):
    """TURNS model calls, no tools, no judge: a step is the env's own overhead (pickled by value to the actors)."""

    async def execute(self, workflow_task, model_tuner):
        messages = [{"role": "user", "content": workflow_task.task.main_query}]
        for _ in range(TURNS):
            reply = await model_tuner(messages)
            messages.append({"role": "assistant", "content": reply.content[0]["text"]})
        return WorkflowOutput(reward=1.0)


MATH_FACTORY = functools.partial(agent_env.make, MATH_AGENT)
MODEL_ONLY_FACTORY = functools.partial(AgentEnv, ModelOnly, None, sandbox_python_tool=False)


def answer_ok(obs: dict) -> str:
    return "ok"


async def play(env_factory, task: Task, latencies: list[float], policy) -> float:
    """One episode; appends each `astep` latency; returns its reward."""
    env = env_factory()
    try:
        obs, _ = await env.areset(options={"task": task})
        while True:
            action = policy(obs)
            started = time.perf_counter()
            obs, reward, terminated, truncated, _ = await env.astep(action)
            latencies.append(time.perf_counter() - started)
            if terminated or truncated:
                return float(reward)
    finally:
        await env.aclose()


async def run(env_factory, episodes: int, concurrency: int, policy=scripted_math_policy) -> tuple[float, list[float], float]:
    """(episodes/s, step latencies, mean reward) of `episodes` episodes, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one(index: int) -> float:
        async with gate:
            return await play(env_factory, TASKS[index % len(TASKS)], latencies, policy)

    started = time.perf_counter()
    rewards = await asyncio.gather(*(one(i) for i in range(episodes)))
    return episodes / (time.perf_counter() - started), latencies, sum(rewards) / len(rewards)


def ms(latencies: list[float]) -> float:
    return statistics.median(latencies) * 1e3


def step_overhead_rows(episodes: int) -> list[str]:
    """One episode at a time: median step latency in process vs through one actor."""
    asyncio.run(run(MATH_FACTORY, 8, 1))  # warm-up: imports, judge and sandbox workers
    asyncio.run(run(MODEL_ONLY_FACTORY, 20, 1, answer_ok))
    rows = []
    with RayEnvPool(MATH_FACTORY, num_actors=1) as math_pool, RayEnvPool(MODEL_ONLY_FACTORY, num_actors=1) as model_pool:
        asyncio.run(run(math_pool.env, 8, 1))
        asyncio.run(run(model_pool.env, 20, 1, answer_ok))
        for name, local_factory, ray_factory, policy, count in (
            (f"model calls only, {TURNS} turns", MODEL_ONLY_FACTORY, model_pool.env, answer_ok, episodes * 4),
            ("MathAgent-v0, python tool + answer", MATH_FACTORY, math_pool.env, scripted_math_policy, episodes),
        ):
            _, in_process, _ = asyncio.run(run(local_factory, count, 1, policy))
            _, through_ray, _ = asyncio.run(run(ray_factory, count, 1, policy))
            rows.append(f"| {name} | {len(in_process)} | {ms(in_process):.2f} | {ms(through_ray):.2f} | "
                        f"{ms(through_ray) - ms(in_process):+.2f} |")
    return rows


def throughput_rows(workers_list: list[int], episodes: int, concurrency: int) -> list[str]:
    """MathAgent-v0 episodes/s in process and with each number of actors."""
    asyncio.run(run(MATH_FACTORY, concurrency, concurrency))  # warm-up at full width: sandbox and judge worker pools grow
    rate, latencies, reward = asyncio.run(run(MATH_FACTORY, episodes, concurrency))
    rows = [f"| in process (no Ray) | {episodes} | {concurrency} | {rate:.1f} | 1.00 | {ms(latencies):.1f} | {reward:.2f} |"]
    for workers in workers_list:
        with RayEnvPool(MATH_FACTORY, num_actors=workers) as pool:
            asyncio.run(run(pool.env, concurrency, concurrency))  # the same warm-up, in every actor
            ray_rate, latencies, reward = asyncio.run(run(pool.env, episodes, concurrency))
        rows.append(f"| {workers} Ray env actor{'s' if workers > 1 else ''} | {episodes} | {concurrency} | "
                    f"{ray_rate:.1f} | {ray_rate / rate:.2f} | {ms(latencies):.1f} | {reward:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="env actor counts to measure (default: 1 2)")
    parser.add_argument("--episodes", type=int, default=256, help="episodes per throughput row")
    parser.add_argument("--concurrency", type=int, default=64, help="episodes at once in a throughput row")
    parser.add_argument("--latency-episodes", type=int, default=30, help="sequential MathAgent episodes per latency row")
    parser.add_argument("--address", default="local", help="Ray cluster (default: a new local one with max(--workers) CPUs)")
    parser.add_argument("--no-write", action="store_true", help="print the tables without updating RESULTS.md")
    args = parser.parse_args()

    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must stay under 108 characters
    local = {"num_cpus": max(args.workers), "include_dashboard": False, "_temp_dir": temp_dir}
    connect(args.address, **(local if args.address == "local" else {}))
    try:
        latency = step_overhead_rows(args.latency_episodes)
        throughput = throughput_rows(args.workers, args.episodes, args.concurrency)
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    latency_table = "\n".join(["| workload | steps | in-process median step ms | through one Ray actor ms | overhead ms |",
                               "|---|---:|---:|---:|---:|", *latency])
    throughput_table = "\n".join(["| MathAgent-v0, scripted policy | episodes | at once | episodes/s | vs in process | median step ms | mean reward |",
                                  "|---|---:|---:|---:|---:|---:|---:|", *throughput])
    print(latency_table + "\n\n" + throughput_table)
    if not args.no_write:
        note = (f"Step overhead: one episode at a time, so a step's latency is its own work plus, through Ray, one actor call "
                f"(the observation pickled both ways). Throughput: the driver, Ray and the actors share this machine's "
                f"{os.cpu_count()} cores; each actor reserves one CPU, and its episodes' sandboxed tool processes and judge "
                "workers run beside it. The scripted policy always answers right, so a mean reward of 1.00 means no "
                "episode was lost.\n"
                f"Command: `uv run python benchmarks/ray_scaling.py --workers {' '.join(map(str, args.workers))}`.\n")
        write_section("Ray scaling (benchmarks/ray_scaling.py)", latency_table + "\n\n" + throughput_table + "\n\n" + note)


if __name__ == "__main__":
    main()
