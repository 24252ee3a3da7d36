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
