"""Where a run's results go: `launcher_record/{config file stem}/` (DESIGN §9)."""

from __future__ import annotations

from pathlib import Path


def run_directory(config_path: str | Path, root: str | Path = "launcher_record") -> Path:
    return Path(root) / Path(config_path).stem
