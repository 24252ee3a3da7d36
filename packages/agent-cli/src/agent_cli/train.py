"""`agent-rl train`: GRPO training of the config's agent, results under `launcher_record/{config stem}/`."""

from __future__ import annotations

import sys
from pathlib import Path

from agent_env.config import AgentRLConfig

from agent_cli.run_dir import run_directory


def run_train(config: AgentRLConfig, max_steps: int | None = None, resume: bool = False, output_root: str | Path = "launcher_record") -> int:
    """Train; returns the exit code: 0 when done or stopped with Ctrl-C (a checkpoint is saved), 2 when refused."""
    from agent_rl.metric_sinks import WandbNotInstalled
    from agent_rl.trainer import RunDirectoryExists, Trainer

    run_dir = run_directory(config, output_root)
    try:
        trainer = Trainer(config, run_dir, resume=resume, max_steps=max_steps)
    except (RunDirectoryExists, WandbNotInstalled) as error:  # the message says what to do
        print(f"agent-rl train: {error}", file=sys.stderr)
        return 2
    main = trainer.ranks.is_main  # under torchrun only rank 0 speaks (and writes)
    if main:
        print(f"training {config.ajet.model.path} for {trainer.total_steps} steps; results in {run_dir}", flush=True)
    try:
        trainer.fit()
    finally:
        trainer.close()
    if main:
        print(f"done: metrics in {run_dir / 'metrics.jsonl'}, checkpoints in {run_dir / 'checkpoints'}", flush=True)
    return 0
