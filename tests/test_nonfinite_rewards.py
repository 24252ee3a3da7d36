"""A non-finite reward (a judge's NaN, a workflow's inf, a NaN step reward) is a labelled episode error, never a
training signal: one NaN advantage makes the loss, every gradient and then every weight NaN."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from agent_env import AgentEnv, JudgeResult, Workflow, WorkflowOutput
from agent_env.tasks import ArithmeticTasks
from test_trainer import CONFIG


class AnswersOnce(Workflow):
    async def execute(self, workflow_task, model_tuner):
        reply = await model_tuner([{"role": "user", "content": workflow_task.task.main_query}])
        return WorkflowOutput(metadata={"final_answer": reply.content[0]["text"]})


class RewardsInfinity(Workflow):
    async def execute(self, workflow_task, model_tuner):
        await model_tuner([{"role": "user", "content": workflow_task.task.main_query}])
        return WorkflowOutput(reward=math.inf)


class NanJudge:
    def compute_reward(self, workflow_task, workflow_output):
        return JudgeResult(float("nan"), True, {"correct": float("nan")})


@pytest.mark.parametrize(("workflow", "judge", "reason", "message"), [
    (AnswersOnce, NanJudge(), "judge_error", "The judge NanJudge returned a non-finite reward (nan)"),
    (RewardsInfinity, None, "workflow_error", "The workflow returned a non-finite reward (inf)"),
])
def test_a_non_finite_final_reward_ends_the_episode_as_an_error(workflow, judge, reason, message):
    env = AgentEnv(workflow, judge, ArithmeticTasks("easy", "validation", n=2), judge_error_reward=-0.5, workflow_error_reward=-0.25)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("12")
    env.close()
    assert terminated and not truncated
    assert info["termination_reason"] == reason and message in info["error"]
    assert reward == (-0.5 if reason == "judge_error" else -0.25) and info["is_success"] is False
    assert info["reward_components"] == {}


def test_a_judge_returning_nan_for_some_episodes_does_not_poison_the_weights(tmp_path: Path, worker_port_base: int, monkeypatch):
    """The attack from the issue: NaN for half of the tasks. Those episodes end with `judge_error` (reward 0), the
    others train, and every weight stays finite."""
    import agent_rl

    monkeypatch.setenv("MASTER_PORT", str(worker_port_base + 47))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(CONFIG.replace("agent_env.judges.last_number:LastNumberJudge", "scripted:NanOnEvenTasks")  # tests/scripted.py
                           .replace("judge_kwargs: {format_weight: 0.1}", "judge_kwargs: {}")
                           .replace("num_repeat: 2", "num_repeat: 4"))
    run_dir = tmp_path / "run"
    trainer_rows = agent_rl.train(config_path, run_dir, max_steps=2)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows[1:]:
        assert math.isfinite(row["learner/loss"]) and math.isfinite(row["learner/grad_norm"])
        assert row["termination/judge_error"] > 0 and math.isfinite(row["reward/mean"])
    assert trainer_rows  # the last step's metrics came back
    from safetensors.torch import load_file

    weights = {k: v for f in (run_dir / "checkpoints" / "step_2").glob("*.safetensors") for k, v in load_file(f).items()}
    assert weights and all(torch.isfinite(t).all() for t in weights.values())


class NanStepReward(Workflow):
    async def execute(self, workflow_task, model_tuner):
        await model_tuner([{"role": "user", "content": workflow_task.task.main_query}])
        model_tuner.add_reward(float("nan"))
        return WorkflowOutput(reward=1.0)


async def test_an_episode_with_a_nan_step_reward_fails_alone_and_gives_no_samples():
    from agent_rl.embedded_model import embedded_model_dir
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.scripted import ScriptedEngine
    from agent_rl.rollout.collector import RolloutCollector
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    tasks = ArithmeticTasks("easy", "validation", n=2)

    collector = RolloutCollector(lambda: AgentEnv(NanStepReward, None, tasks), ScriptedEngine(tokenizer, lambda obs: "12"),
                                 tokenizer, SamplingParams())
    batch = await collector.collect(tasks[:2], 1)
    assert [e.samples for e in batch.episodes] == [[], []]
    assert all("non-finite reward (nan)" in e.error for e in batch.episodes)
    assert batch.metrics()["rollout/failed_episodes"] == 2.0 and math.isfinite(batch.metrics()["reward/mean"])
