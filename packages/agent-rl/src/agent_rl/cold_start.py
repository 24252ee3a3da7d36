"""The cold start (`ajet.cold_start`): a scripted policy's demonstrations, then supervised steps on them.

RL reinforces what the policy already does now and then. A small model that never writes a tool call gives GRPO
nothing to reinforce, however long it runs (SmolLM2-135M: 0 tool calls in 32 episodes with the tool schema in
its prompt). A short supervised fine-tune on demonstrations of the move fixes that, as in most tool-use recipes.
Here the demonstrations are episodes played by a scripted policy through the *same* env, judge, tools, chat
template and collector as training, so their tokens and loss masks are exactly those of sampled episodes: the
model is trained on its own turns only, never on tool outputs or template tokens.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

from agent_env.config import AgentRLConfig
from agent_env.loading import load_object
from agent_env.types import Task

from agent_rl.engines.scripted import ScriptedEngine
from agent_rl.rollout.collector import RolloutBatch
from agent_rl.rollout.from_config import build_collector
from agent_rl.rollout.samples import TrainingSample


def collect_demonstrations(config: AgentRLConfig, tokenizer: Any, tasks: Sequence[Task], loop: asyncio.AbstractEventLoop) -> RolloutBatch:
    """One episode of `ajet.cold_start.policy` on each of `tasks`, through the config's env and collector."""
    policy = load_object(config.ajet.cold_start.policy, base_dir=config.base_dir)
    collector = build_collector(config, ScriptedEngine(tokenizer, policy), tokenizer)
    try:
        return loop.run_until_complete(collector.collect(tasks, 1))
    finally:
        collector.close()


def demonstration_tasks(tasks: Sequence[Task], count: int, seed: int) -> list[Task]:
    """`count` of `tasks` (all of them if fewer), drawn without replacement with `seed`."""
    picked = random.Random(seed).sample(range(len(tasks)), min(count, len(tasks)))
    return [tasks[i] for i in picked]


def fine_tune(learner: Any, demonstrations: Sequence[TrainingSample], *, epochs: int, batch_size: int,
              lr: float | None, seed: int) -> dict[str, float]:
    """`epochs` passes of `learner.supervised_step` over `demonstrations` in shuffled batches of `batch_size`.

    Returns `sft/loss_first` and `sft/loss_last` (the first and last step's loss), `sft/steps`, and the last
    step's other metrics. Every rank must call it with the same demonstrations (as for `train_step`).
    """
    rng = random.Random(seed)
    order = list(range(len(demonstrations)))
    losses: list[float] = []
    metrics: dict[str, float] = {}
    for _ in range(epochs):
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            metrics = learner.supervised_step([demonstrations[i] for i in order[start : start + batch_size]], lr=lr)
            losses.append(metrics["sft/loss"])
    if losses:
        metrics |= {"sft/loss_first": losses[0], "sft/loss_last": losses[-1]}
    return metrics | {"sft/steps": float(len(losses))}


def run_cold_start(trainer: Any) -> dict[str, float]:
    """The trainer's cold start: rank 0 collects the demonstrations (successful episodes only; all episodes go
    to `trajectories/cold_start.jsonl`), every rank fine-tunes on them and forgets the optimizer's moments, and
    the engine gets the new weights.
    Returns `cold_start/episodes`, `cold_start/policy_success_rate`, `cold_start/demonstrations`,
    `timing/cold_start_s` and `fine_tune`'s `sft/*` metrics."""
    from agent_rl.rollout.trajectories import write_trajectories

    config, started = trainer.config, time.perf_counter()
    settings = config.ajet.cold_start
    demonstrations: list[TrainingSample] | None = None
    metrics: dict[str, float] = {}
    if trainer.ranks.is_main:
        tokenizer = trainer.engine.tokenizer if hasattr(trainer.engine, "tokenizer") else trainer._tokenizer()
        tasks = demonstration_tasks(trainer.train_tasks, settings.num_tasks, trainer.seed)
        batch = collect_demonstrations(config, tokenizer, tasks, trainer.loop)
        write_trajectories(trainer.run_dir / "trajectories" / "cold_start.jsonl", batch.samples)
        demonstrations = [s for e in batch.episodes if e.is_success for s in e.samples]
        metrics = {
            "cold_start/episodes": float(len(batch.episodes)),
            "cold_start/policy_success_rate": sum(e.is_success for e in batch.episodes) / max(1, len(batch.episodes)),
            "cold_start/demonstrations": float(len(demonstrations)),
        }
    demonstrations = trainer.ranks.broadcast(demonstrations)
    if not demonstrations:
        raise ValueError(
            f"The cold start's policy {settings.policy!r} solved none of its episodes, so there is nothing to "
            "learn from; trajectories/cold_start.jsonl in the run directory shows what it did."
        )
    metrics |= fine_tune(trainer.learner, demonstrations, epochs=settings.epochs, batch_size=settings.batch_size,
                         lr=settings.lr, seed=trainer.seed)
    trainer.learner.reset_optimizer_state()  # GRPO starts from the tuned weights with fresh moments
    trainer._sync_weights()
    metrics["timing/cold_start_s"] = time.perf_counter() - started
    return metrics
