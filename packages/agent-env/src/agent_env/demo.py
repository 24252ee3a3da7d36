"""`agent-env demo`: the tutorial's math agent env played by a scripted policy (no model needed).

The policy (`agent_env.policies.scripted_math_policy`) does what a good model would: it calls the python tool to
compute the expression in the question, then answers with the tool's output in `\\boxed{}`. Every third episode it
answers wrong on purpose, so the judge's 0 shows up too.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from agent_env.messages import render_conversation
from agent_env.policies import scripted_math_policy
from agent_env.registration import make


async def _play(env_id: str, episodes: int, seed: int, show: int) -> None:
    env = make(env_id)
    successes, started = 0, time.perf_counter()
    for episode in range(episodes):
        obs, info = await env.areset(seed=seed + episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = await env.astep(scripted_math_policy(obs, wrong=episode % 3 == 2))
            done = terminated or truncated
        successes += info["is_success"]
        if episode < show:
            print(render_conversation(obs["messages"]))
        print(f"episode {episode}: task={info['task_id']} turns={info['turn']} reward={reward:.1f} "
              f"success={info['is_success']} end={info['termination_reason']}")
    await env.aclose()
    elapsed = time.perf_counter() - started
    print(f"\n{successes}/{episodes} solved by the scripted policy in {elapsed:.1f} s "
          f"({episodes / elapsed:.1f} episodes/s, python tool included)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agent-env demo", description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="agent_env/MathAgent-v0", help="env id (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=6, help="episodes to play (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: %(default)s)")
    parser.add_argument("--show", type=int, default=1, help="print the full conversation of the first N episodes")
    args = parser.parse_args(argv)
    asyncio.run(_play(args.env, args.episodes, args.seed, args.show))
    return 0
