"""`agent-rl debug`: a few tasks with the configured model and env, no training; every episode printed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent_env.config import AgentRLConfig, dump_resolved
from agent_env.from_config import env_factory_from_config, tasks_from_config
from agent_env.messages import render_conversation

from agent_cli.run_dir import run_directory


def build_collector(config: AgentRLConfig, engine: Any, tokenizer: Any) -> Any:
    """The rollout collector the config describes (limits, sampling, madness checks)."""
    from agent_rl.engines.base import SamplingParams
    from agent_rl.rollout.collector import RolloutCollector, RolloutLimits

    ajet = config.ajet
    rollout = ajet.rollout
    limits = RolloutLimits(
        max_prompt_length=ajet.data.max_prompt_length,
        max_response_length=ajet.data.max_response_length,
        max_response_length_in_one_turn=rollout.max_response_length_in_one_turn,
        max_model_len=min(rollout.max_model_len, engine.max_model_len),
        max_samples_per_episode=rollout.multi_turn.max_sample_per_task,
    )
    sampling = SamplingParams(temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k,
                              max_tokens=rollout.max_response_length_in_one_turn)
    return RolloutCollector(env_factory_from_config(config), engine, tokenizer, sampling, chat_template=ajet.model.chat_template,
                            limits=limits, max_concurrency=rollout.max_env_worker,
                            madness_checks=rollout.compute_madness_checklist, madness_reward=rollout.agent_madness_reward)


def run_debug(config: AgentRLConfig, num_tasks: int | None = None, output_root: str | Path = "launcher_record") -> Path:
    """Run `num_tasks` training tasks x `num_repeat` episodes; print them; write `trajectories/step_0.jsonl`."""
    from agent_rl.engines.hf import HFEngine
    from agent_rl.rollout.trajectories import write_trajectories

    num_tasks = num_tasks or config.ajet.debug.num_tasks
    out = run_directory(config.config_path or config.ajet.project_name, output_root)
    out.mkdir(parents=True, exist_ok=True)
    dump_resolved(config, out / "config.yaml")
    tasks = list(tasks_from_config(config, "train")[:num_tasks])
    print(f"debug: {len(tasks)} tasks x {config.ajet.rollout.num_repeat} episodes with {config.ajet.model.path} (HF engine, no training)")
    engine = HFEngine(config.ajet.model.path, seed=config.ajet.trainer_common.seed)
    try:
        collector = build_collector(config, engine, engine.tokenizer)
        batch = asyncio.run(collector.collect(tasks, config.ajet.rollout.num_repeat, seed=config.ajet.trainer_common.seed))
    finally:
        engine.close()
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
