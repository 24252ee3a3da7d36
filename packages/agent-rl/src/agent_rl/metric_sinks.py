"""`MetricSinks`: where a run's metrics go: `metrics.jsonl` always, TensorBoard and W&B when asked for, a console line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from agent_env.config import AgentRLConfig, TrainerCommonConfig

logger = logging.getLogger("agent_rl")

WANDB_RUN_ID = "wandb_run_id.txt"


class WandbNotInstalled(ImportError):
    """`trainer_common.logger` names `wandb`, but the `wandb` package cannot be imported."""


def check_sinks_installed(common: TrainerCommonConfig) -> None:
    """Raise `WandbNotInstalled` when `wandb` is asked for (and not `disabled`) but not installed. The trainer calls
    this before it creates the run directory or loads the model, so the run fails in a second, not minutes."""
    if not _wants_wandb(common):
        return
    try:
        import wandb  # noqa: F401
    except ImportError as error:
        raise WandbNotInstalled(
            "ajet.trainer_common.logger names `wandb`, but the wandb package is not installed: run "
            "`uv sync --extra wandb` (or `pip install 'agent-rl[wandb]'`), or remove `wandb` from "
            "ajet.trainer_common.logger.") from error


class MetricSinks:
    """The metric outputs of a run directory (only rank 0 makes one).

    `log(metrics, step)` appends one JSON row `{"step": step, ...}` to `metrics.jsonl` (always; every value, ints as
    floats), and sends the finite numbers to the sinks `trainer_common.logger` names: TensorBoard events under
    `tensorboard/`, and a W&B run under `wandb/` (named after the run directory, holding the resolved config; its
    id is kept in `wandb_run_id.txt`, so a resumed run continues the same W&B run). `close()` flushes and finishes
    them; it is safe to call twice.
    """

    def __init__(self, run_dir: str | Path, config: AgentRLConfig) -> None:
        common = config.ajet.trainer_common
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._tensorboard = _tensorboard_writer(self.run_dir / "tensorboard") if "tensorboard" in common.logger else None
        self._wandb = _wandb_run(self.run_dir, config) if _wants_wandb(common) else None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": step, **{k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}}
        with open(self.metrics_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self, failed: bool = False) -> None:
        """Flush and close every sink; `failed` marks the W&B run as failed (exit code 1). Safe to call twice."""
        tensorboard, self._tensorboard = self._tensorboard, None
        if tensorboard is not None:
            tensorboard.close()
        run, self._wandb = self._wandb, None
        if run is not None:
            run.finish(exit_code=1 if failed else 0)


def progress_line(step: int, total: int, metrics: dict[str, float], eta_s: float) -> str:
    """The console line `fit` prints after each step: reward, success, validation accuracy, speed, ETA."""
    parts = [f"step {step}/{total}", f"reward {metrics.get('reward/mean', 0.0):.3f}", f"success {metrics.get('reward/success_rate', 0.0):.2f}"]
    if metrics.get("rollout/tool_calls_per_episode", 0.0) > 0:
        parts.append(f"tool calls {metrics['rollout/tool_call_rate']:.2f}")
    if "val/accuracy" in metrics:
        parts.append(f"val acc {metrics['val/accuracy']:.3f}")
    parts += [f"{metrics.get('tokens/per_s', 0.0):,.0f} tok/s", f"{metrics.get('timing/step_s', 0.0):.1f} s/step", f"ETA {_duration(eta_s)}"]
    return " | ".join(parts)


def cold_start_line(metrics: dict[str, float]) -> str:
    """The console line after the cold start: demonstrations kept, supervised steps, loss, time."""
    return (f"cold start: {metrics['cold_start/demonstrations']:.0f} demonstrations "
            f"(the policy solved {metrics['cold_start/policy_success_rate']:.0%} of {metrics['cold_start/episodes']:.0f}), "
            f"{metrics['sft/steps']:.0f} supervised steps, loss {metrics['sft/loss_first']:.3f} → {metrics['sft/loss_last']:.3f}, "
            f"{metrics['timing/cold_start_s']:.1f} s")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _wants_wandb(common: TrainerCommonConfig) -> bool:
    return "wandb" in common.logger and common.wandb_mode != "disabled"


def _tensorboard_writer(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard is not installed; metrics go to metrics.jsonl only")
        return None
    return SummaryWriter(str(directory))


def _wandb_run(run_dir: Path, config: AgentRLConfig) -> Any:
    """A W&B run writing under `run_dir/wandb/`: the one whose id `wandb_run_id.txt` holds (a resumed run), else a
    new one, whose id is then saved there."""
    import wandb

    common = config.ajet.trainer_common
    id_file = run_dir / WANDB_RUN_ID
    saved_id = id_file.read_text(encoding="utf-8").strip() if id_file.exists() else ""
    continued = {"id": saved_id, "resume": "allow"} if saved_id else {}
    run = wandb.init(project=common.wandb_project or config.ajet.project_name, entity=common.wandb_entity,
                     name=run_dir.name, dir=run_dir, config=config.to_yaml_dict(), mode=common.wandb_mode,
                     reinit="create_new", **continued)  # a run of its own: other W&B runs of this process are left alone
    id_file.write_text(run.id + "\n", encoding="utf-8")
    return run


__all__ = ["WANDB_RUN_ID", "MetricSinks", "WandbNotInstalled", "check_sinks_installed", "cold_start_line", "progress_line"]
