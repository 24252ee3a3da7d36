"""`agent-rl train` end to end on the CPU with the tiny random model: collect → learn → sync, logs, checkpoints, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from agent_env.config import load_config

CONFIG = """
ajet:
  project_name: tiny
  model:
    path: embedded:tiny-random-SmolLM2
  task_reader:
    type: arithmetic
    arithmetic: {level: easy, num_train: 6, num_validation: 3}
  data: {train_batch_size: 2, max_prompt_length: 256, max_response_length: 24}
  rollout:
    env_id: agent_env/Completion-v0
    num_repeat: 2
    max_response_length_in_one_turn: 12
    engine: hf
  task_judge:
    judge_protocol: agent_env.judges.last_number:LastNumberJudge
    judge_kwargs: {format_weight: 0.1}
  trainer_common: {save_freq: 2, test_freq: 2, total_epochs: 1, logger: [console, tensorboard], seed: 3}
  learner: {lr: 1.0e-4, max_tokens_per_micro_batch: 512}
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(CONFIG)
    return path


def test_train_logs_checkpoints_and_resumes(config_path: Path, tmp_path: Path, worker_port_base: int, monkeypatch):
    from agent_rl.trainer import RunDirectoryExists, train

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 7))
    run_dir = tmp_path / "launcher_record" / "tiny"
    config = load_config(config_path)
    train(config, run_dir, max_steps=2)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]  # validation before training, then two steps
    assert {"reward/mean", "timing/step_s", "tokens/generated", "learner/loss", "learner/grad_norm"} <= set(rows[1])
    assert "val/accuracy" in rows[0] and "val/accuracy" in rows[2] and "val/accuracy" not in rows[1]
    assert len((run_dir / "trajectories" / "step_1.jsonl").read_text().splitlines()) == 4
    checkpoint = run_dir / "checkpoints" / "step_2"
    assert (checkpoint / "config.json").exists() and list(checkpoint.glob("*.safetensors"))
    assert (run_dir / "config.yaml").exists() and list((run_dir / "tensorboard").iterdir())

    with pytest.raises(RunDirectoryExists, match="--resume"):
        train(load_config(config_path), run_dir, max_steps=3)
    train(load_config(config_path), run_dir, resume=True, max_steps=3)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert (run_dir / "checkpoints" / "step_3").exists()


def test_zero_variance_groups_are_dropped_and_refilled(config_path: Path, tmp_path: Path, worker_port_base: int, monkeypatch):
    """With `data.filter_zero_variance_groups` the learner sees only groups with a reward spread, the batch is
    refilled by extra collection rounds, and the rollout metrics still count every episode collected."""
    from agent_rl.trainer import train

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 9))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    text = config_path.read_text().replace("num_train: 6", "num_train: 12").replace(
        "max_response_length: 24}", "max_response_length: 24, filter_zero_variance_groups: true, max_oversampling_rounds: 8}"
    ).replace("agent_env.judges.last_number:LastNumberJudge", "scripted:SpreadOnEvenTasks").replace(
        "judge_kwargs: {format_weight: 0.1}", "judge_kwargs: {}")
    config_path.write_text(text)
    config = load_config(config_path)
    config.ajet.trainer_common.val_before_train = False
    run_dir = tmp_path / "launcher_record" / "tiny"
    train(config, run_dir, max_steps=1)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1
    for row in rows:
        assert row["rollout/kept_groups"] == 2.0
        assert row["learner/zero_variance_fraction"] == 0.0  # the learner saw only groups with a spread
        collected_groups = row["rollout/episodes"] / 2
        assert row["rollout/dropped_zero_variance_groups"] == collected_groups - 2  # half the tasks have no spread
        assert row["rollout/oversampling_rounds"] >= 1 or collected_groups == 2
        assert row["reward/mean"] > 0  # computed over every episode, the dropped 0.5s included
    samples = [json.loads(line) for line in (run_dir / "trajectories" / "step_1.jsonl").read_text().splitlines()]
    assert len(samples) == rows[0]["rollout/episodes"] and len({s["group_id"] for s in samples}) == len(samples) // 2
