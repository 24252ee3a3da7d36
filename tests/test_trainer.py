"""`agent-rl train` end to end on the CPU with the tiny random model: collect → learn → sync, logs, checkpoints, resume."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from agent_env.config import load_config
from wandb_offline import wandb_records

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
    import agent_rl
    from agent_rl.trainer import RunDirectoryExists, train

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 7))
    run_dir = tmp_path / "launcher_record" / "tiny"
    agent_rl.train(config_path, run_dir, max_steps=2)  # the package's API, from the YAML file
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


def test_an_engine_in_its_own_process_samples_with_the_learners_weights(config_path: Path, tmp_path: Path, worker_port_base: int, monkeypatch):
    """`rollout.engine_process`: the HF engine runs in a child process; after each step (one step stale) it holds the
    learner's new weights and samples exactly what the learner's own module samples."""
    import asyncio

    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.process import EngineProcess
    from agent_rl.trainer import Trainer

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 11))
    config = load_config(config_path, ["ajet.rollout.engine_process=true", "ajet.trainer_common.max_staleness=1"])
    config.ajet.trainer_common.val_before_train = False
    trainer = Trainer(config, tmp_path / "launcher_record" / "tiny")
    try:
        assert isinstance(trainer.engine, EngineProcess) and not trainer.shares_weights
        greedy = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
        prompts = [[1, 2, 3], [5, 8, 13, 21]]
        for _ in range(2):
            metrics = trainer.step()
            assert metrics["rollout/episodes"] == 4 and metrics["rollout/failed_episodes"] == 0
            local = HFEngine(trainer.learner.module, trainer._tokenizer(), seed=0)
            try:
                for prompt in prompts:
                    hosted = trainer.loop.run_until_complete(trainer.engine.generate(prompt, greedy))
                    assert hosted[0].token_ids == asyncio.run(local.generate(prompt, greedy))[0].token_ids
            finally:
                local.close()
    finally:
        trainer.close()
    assert trainer.engine._process.exitcode == 0  # the child closed its engine and exited


def test_zero3_on_one_rank_trains_and_the_hf_engine_gets_whole_weights(config_path: Path, tmp_path: Path, worker_port_base: int, monkeypatch):
    """Under ZeRO-3 the learner's weights are partitioned, so the HF engine loads a copy of its own; that copy is
    whole (transformers' ZeRO-3 switch is off again once the learner has loaded), and it gets the gathered weights."""
    import torch
    from agent_rl.trainer import Trainer

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 13))
    config = load_config(config_path, ["ajet.learner.zero_stage=3"])
    config.ajet.trainer_common.val_before_train = False
    trainer = Trainer(config, tmp_path / "launcher_record" / "tiny")
    try:
        assert not trainer.shares_weights
        assert all(p.numel() == 0 for p in trainer.learner.module.parameters())  # partitioned (one rank: all off-module)
        metrics = trainer.step()
        assert metrics["rollout/episodes"] == 4 and metrics["rollout/failed_episodes"] == 0
        gathered = trainer.learner.state_dict_for_sync()
        engine_weights = trainer.engine.model.state_dict()
        assert gathered.keys() <= engine_weights.keys()
        assert all(torch.equal(engine_weights[name].detach().cpu(), tensor) for name, tensor in gathered.items())
    finally:
        trainer.close()


def test_wandb_run_records_every_step_is_finished_on_ctrl_c_and_continued_by_resume(
        config_path: Path, tmp_path: Path, offline_wandb: Path, worker_port_base: int, monkeypatch):
    """`logger: [wandb]` (offline by default): a W&B run under the run directory holds each step's metrics and is
    finished when Ctrl-C stops `fit`; `--resume` continues the same W&B run (same id, from `wandb_run_id.txt`), in a
    second offline-run folder."""
    from agent_rl.metric_sinks import WANDB_RUN_ID
    from agent_rl.trainer import Trainer, train

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 11))
    run_dir = tmp_path / "launcher_record" / "tiny"

    def train_with_wandb(**kwargs) -> None:
        config = load_config(config_path)
        config.ajet.trainer_common.logger = ["wandb"]
        config.ajet.trainer_common.val_before_train = False
        train(config, run_dir, **kwargs)

    one_step = Trainer.step

    def ctrl_c_during_step_2(trainer: Trainer) -> dict[str, float]:
        if trainer.step_index == 1:
            raise KeyboardInterrupt
        return one_step(trainer)

    monkeypatch.setattr(Trainer, "step", ctrl_c_during_step_2)
    train_with_wandb(max_steps=2)  # stopped after step 1: a checkpoint, and the W&B run finished
    monkeypatch.setattr(Trainer, "step", one_step)
    train_with_wandb(resume=True, max_steps=2)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert not (run_dir / "tensorboard").exists()
    first, resumed = sorted((run_dir / "wandb").glob("offline-run-*"))
    runs, histories = [], []
    for offline_run in (first, resumed):
        records = wandb_records(offline_run)
        runs += [r["run"] for r in records if r["type"] == "run"]
        histories.append([r["history"] for r in records if r["type"] == "history"])
        assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [0]  # finished, once
    assert runs[0]["run_id"] == runs[1]["run_id"] == (run_dir / WANDB_RUN_ID).read_text().strip()
    assert runs[1].get("resume") is True and runs[0]["display_name"] == runs[1]["display_name"] == "tiny"
    assert runs[0]["project"] == "tiny" and runs[0]["config"]["update"]["ajet"]["model"]["path"] == "embedded:tiny-random-SmolLM2"
    assert [[h["step"]["num"] for h in history] for history in histories] == [[1], [2]]
    assert [history[0]["item"]["reward/mean"] for history in histories] == [r["reward/mean"] for r in rows]


def test_missing_wandb_fails_before_the_run_directory_and_the_model(config_path: Path, tmp_path: Path, monkeypatch, capsys):
    """`wandb` asked for but not installed: `Trainer` says how to install it before it creates the run directory
    or loads the model (so the retry needs no `--resume`); `agent-rl train` prints that and exits with 2."""
    from agent_cli.train import run_train
    from agent_rl.metric_sinks import WandbNotInstalled
    from agent_rl.trainer import Trainer

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as when it is not installed
    config = load_config(config_path)
    config.ajet.trainer_common.logger = ["console", "wandb"]
    run_dir = tmp_path / "launcher_record" / "tiny"
    with pytest.raises(WandbNotInstalled) as error:
        Trainer(config, run_dir)
    assert str(error.value) == (
        "ajet.trainer_common.logger names `wandb`, but the wandb package is not installed: run `uv sync --extra wandb` "
        "(or `pip install 'agent-rl[wandb]'`), or remove `wandb` from ajet.trainer_common.logger.")
    assert not run_dir.exists()
    assert run_train(config, output_root=tmp_path / "launcher_record") == 2
    assert "uv sync --extra wandb" in capsys.readouterr().err and not run_dir.exists()


def test_import_agent_rl_is_light_and_exports_the_api():
    import subprocess

    code = ("import sys, agent_rl; heavy = [m for m in ('torch', 'vllm', 'transformers', 'deepspeed') if m in sys.modules]; "
            "assert not heavy, heavy; from agent_rl import Trainer, train, Learner, HFEngine; "
            "import agent_rl.trainer as t; assert agent_rl.train is t.train and agent_rl.Trainer is t.Trainer; "
            "assert sorted(dir(agent_rl)) == sorted(agent_rl.__all__) == sorted(agent_rl._EXPORTS)")
    subprocess.run([sys.executable, "-c", code], check=True)
