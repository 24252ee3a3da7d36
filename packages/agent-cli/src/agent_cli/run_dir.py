"""Where a run's results go: `launcher_record/{run name}/` (docs/design.md, "Results on disk"), one rule for every command."""

from __future__ import annotations

from pathlib import Path

from agent_env.config import AgentRLConfig


def run_directory(config: AgentRLConfig, root: str | Path = "launcher_record") -> Path:
    """`root/{config.run_name()}`: the experiment name, else the config file's stem."""
    return Path(root) / config.run_name()
