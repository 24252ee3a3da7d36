"""Reading an offline W&B run the way a user can: `wandb leet inspect --json`, W&B's reader of its `.wandb` log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def wandb_records(run_path: Path) -> list[dict]:
    """The records of one offline W&B run directory (`.../wandb/offline-run-*`), one JSON object each, with a
    `type`: `run` (id, name, project, config), `history` (one step's values), `summary`, `exit`, ..."""
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_path)]
    printed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    return [json.loads(line) for line in printed.splitlines() if line.strip()]
