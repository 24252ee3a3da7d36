"""The rollout collector a YAML config describes (shared by `agent-rl train`, `debug` and `eval`)."""

from __future__ import annotations

from typing import Any

from agent_env.config import AgentRLConfig
from agent_env.from_config import env_factory_from_config

from agent_rl.engines.base import SamplingParams
from agent_rl.rollout.collector import RolloutCollector, RolloutLimits


def build_collector(config: AgentRLConfig, engine: Any, tokenizer: Any) -> RolloutCollector:
    """The rollout collector a config describes: its env, limits, sampling and madness checks.

    With `ajet.rollout.ray.enabled` the envs live in Ray actors: this joins (or starts) the cluster and starts
    the actors now (`RayEnvPool.start`), so a cluster that cannot host them fails here, before any episode;
    `collector.close()` stops them.
    """
    ajet = config.ajet
    rollout = ajet.rollout
    on_close = []
    if rollout.ray.enabled:
        from agent_rl.rollout.ray_envs import RayEnvPool

        pool = RayEnvPool.from_config(config).start()
        env_factory, on_close = pool.env, [pool.close]
    else:
        env_factory = env_factory_from_config(config)
    limits = RolloutLimits(
        max_prompt_length=ajet.data.max_prompt_length,
        max_response_length=ajet.data.max_response_length,
        max_response_length_in_one_turn=rollout.max_response_length_in_one_turn,
        max_model_len=min(rollout.max_model_len, engine.max_model_len),
        max_samples_per_episode=rollout.multi_turn.max_sample_per_task,
    )
    sampling = SamplingParams(temperature=rollout.temperature, top_p=rollout.top_p, top_k=rollout.top_k, max_tokens=rollout.max_response_length_in_one_turn)
    return RolloutCollector(env_factory, engine, tokenizer, sampling, chat_template=ajet.model.chat_template,
                            limits=limits, max_concurrency=rollout.max_env_worker,
                            madness_checks=rollout.compute_madness_checklist, madness_reward=rollout.agent_madness_reward,
                            max_env_restarts=rollout.ray.max_episode_retries, on_close=on_close)
