"""`agent-rl debug`: a few tasks with the configured model and env, no training; every episode printed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent_env.config import AgentRLConfig, dump_resolved
from agent_env.from_config import tasks_from_config
from agent_env.messages import render_conversation

from agent_cli.run_dir import run_directory


def run_debug(config: AgentRLConfig, num_tasks: int | None = None, output_root: str | Path = "launcher_record") -> Path:
    """Run `num_tasks` training tasks x `num_repeat` episodes; print them; write `trajectories/step_0.jsonl`."""
    from agent_rl.engines.hf import HFEngine
    from agent_rl.rollout.trajectories import write_trajectories

    num_tasks = num_tasks or config.ajet.debug.num_tasks
    out = run_directory(config, output_root)
    out.mkdir(parents=True, exist_ok=True)
    dump_resolved(config, out / "config.yaml")
    tasks = list(tasks_from_config(config, "train")[:num_tasks])
    print(f"debug: {len(tasks)} tasks x {config.ajet.rollout.num_repeat} episodes with {config.ajet.model.path} (HF engine, no training)")
    engine = HFEngine(config.ajet.model.path, seed=config.ajet.trainer_common.seed)
    collector = None
    try:
        from agent_rl.rollout.from_config import build_collector

        collector = build_collector(config, engine, engine.tokenizer)
        batch = asyncio.run(collector.collect(tasks, config.ajet.rollout.num_repeat, seed=config.ajet.trainer_common.seed))
    finally:
        engine.close()
        if collector is not None:
            collector.close()
    for episode in batch.episodes:
        print(f"\n━━ episode {episode.episode_id}  task={episode.task_id}  turns={episode.num_turns}  reward={episode.reward:.2f}  "
              f"success={episode.is_success}  end={episode.termination_reason or 'failed'}")
        if episode.error:
            print(episode.error)
        elif episode.samples:
            print(render_conversation(episode.samples[-1].messages))
    path = write_trajectories(out / "trajectories" / "step_0.jsonl", batch.samples)
    metrics = batch.metrics()
    print(f"\nreward/mean={metrics['reward/mean']:.3f} success_rate={metrics['reward/success_rate']:.3f} "
          f"samples={len(batch.samples)} generated_tokens={int(metrics['tokens/generated'])} in {batch.elapsed_s:.1f} s")
    print(f"trajectories: {path}")
    return path
