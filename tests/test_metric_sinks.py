"""`MetricSinks`: metrics.jsonl rows, and a real (offline) W&B run: what it records, its id file, `disabled`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from agent_env.config import AgentRLConfig
from wandb_offline import wandb_records


def sinks_config(**trainer_common) -> AgentRLConfig:
    return AgentRLConfig.model_validate({"ajet": {"project_name": "tiny", "rollout": {"env_id": "agent_env/Completion-v0"},
                                                  "trainer_common": trainer_common}})


@pytest.mark.parametrize(("wandb_project", "expected_project"), [(None, "tiny"), ("elsewhere", "elsewhere")])
def test_wandb_run_gets_the_finite_numbers_of_each_step(tmp_path: Path, offline_wandb: Path, wandb_project, expected_project):
    from agent_rl.metric_sinks import WANDB_RUN_ID, MetricSinks

    run_dir = tmp_path / "launcher_record" / "tiny-run"
    run_dir.mkdir(parents=True)
    sinks = MetricSinks(run_dir, sinks_config(logger=["wandb"], wandb_project=wandb_project))
    sinks.log({"reward/mean": 0.25, "tokens/generated": 7, "learner/kl": math.nan, "note": "text"}, step=1)
    sinks.log({"reward/mean": 0.5, "tokens/generated": 9, "learner/kl": math.inf, "note": "text"}, step=2)
    sinks.close()
    sinks.close()  # safe twice

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # metrics.jsonl keeps every value
    assert rows[0]["note"] == "text" and math.isnan(rows[0]["learner/kl"]) and rows[0]["tokens/generated"] == 7.0
    assert not (run_dir / "tensorboard").exists()
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    records = wandb_records(offline_run)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["display_name"] == "tiny-run" and run["project"] == expected_project
    assert run["config"]["update"]["ajet"]["trainer_common"]["logger"] == ["wandb"]  # the resolved config
    assert (run_dir / WANDB_RUN_ID).read_text().strip() == run["run_id"] == offline_run.name.rsplit("-", 1)[1]
    history = [r["history"] for r in records if r["type"] == "history"]
    assert [h["step"]["num"] for h in history] == [1, 2]
    assert [h["item"]["reward/mean"] for h in history] == [0.25, 0.5]
    assert [h["item"]["tokens/generated"] for h in history] == [7, 9]
    assert not any("learner/kl" in h["item"] or "note" in h["item"] for h in history)  # non-finite, non-numeric: skipped
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [0]  # finished
    assert not any((offline_wandb / "wandb_dir").iterdir())  # the run directory, not WANDB_DIR


def test_disabled_wandb_needs_no_package_and_writes_nothing(tmp_path: Path, offline_wandb: Path, monkeypatch):
    from agent_rl.metric_sinks import WANDB_RUN_ID, MetricSinks, check_sinks_installed

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    config = sinks_config(logger=["wandb"], wandb_mode="disabled")
    check_sinks_installed(config.ajet.trainer_common)
    sinks = MetricSinks(tmp_path, config)
    sinks.log({"reward/mean": 1.0}, step=1)
    sinks.close()
    assert (tmp_path / "metrics.jsonl").exists()
    assert not (tmp_path / "wandb").exists() and not (tmp_path / WANDB_RUN_ID).exists()


def test_a_failed_run_ends_its_wandb_run_as_failed(tmp_path: Path, offline_wandb: Path):
    from agent_rl.metric_sinks import MetricSinks

    run_dir = tmp_path / "failed-run"
    run_dir.mkdir()
    sinks = MetricSinks(run_dir, sinks_config(logger=["wandb"]))
    sinks.log({"reward/mean": 0.5}, step=1)
    sinks.close(failed=True)  # what Trainer.fit does when a step raises
    sinks.close()  # the later Trainer.close() changes nothing
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    records = wandb_records(offline_run)
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [1]
    assert [r["history"]["item"]["reward/mean"] for r in records if r["type"] == "history"] == [0.5]
