"""`agent-rl debug` / `ajet --backbone debug`: the tutorial's debug step, with a real (tiny) model on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "math_agent"
TINY = "ajet.model.path=embedded:tiny-random-SmolLM2"
SMALL = ["ajet.rollout.num_repeat=2", "ajet.rollout.max_response_length_in_one_turn=16", "ajet.data.max_response_length=64"]

WORKFLOW = '''
import os
from ajet import Workflow, WorkflowOutput

class PidWorkflow(Workflow):
    async def execute(self, workflow_task, model_tuner):
        reply = await model_tuner([{"role": "user", "content": workflow_task.task.main_query}])
        with open(os.environ["PID_FILE"], "a") as out:
            out.write(f"{os.getpid()}\\n")
        return WorkflowOutput(reward=0.5, metadata={"final_answer": str(reply.content)})
'''


def test_ajet_debug_runs_the_tutorial_example_and_writes_trajectories(tmp_path):
    config = tmp_path / "math_agent.yaml"
    config.write_text((EXAMPLE / "math_agent.yaml").read_text())
    (tmp_path / "workflow.py").write_text((EXAMPLE / "workflow.py").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "ajet.cli.launcher", "--conf", str(config), "--backbone", "debug", TINY, "ajet.debug.num_tasks=1", *SMALL],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "episode arith-easy-train-0#0/0" in result.stdout and "accepted, not used" in result.stderr
    rows = [json.loads(line) for line in (tmp_path / "launcher_record" / "math_agent" / "trajectories" / "step_0.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and {r["group_id"] for r in rows} == {"arith-easy-train-0#0"}
    assert all(len(r["response_ids"]) == len(r["loss_mask"]) == len(r["logprobs"]) for r in rows)
    assert (tmp_path / "launcher_record" / "math_agent" / "config.yaml").exists()


def test_launcher_runs_the_workflow_in_this_process(tmp_path, monkeypatch):
    (tmp_path / "workflow.py").write_text(WORKFLOW)
    config = tmp_path / "pid.yaml"
    config.write_text("ajet:\n  rollout:\n    agentscope_workflow: workflow.py->PidWorkflow\n    num_repeat: 1\n")
    pid_file = tmp_path / "pids.txt"
    monkeypatch.setenv("PID_FILE", str(pid_file))
    monkeypatch.chdir(tmp_path)
    from ajet.cli.launcher import main

    assert main(["--backbone", "debug", "--conf", str(config), TINY, "ajet.debug.num_tasks=2", *SMALL[1:]]) == 0
    assert pid_file.read_text().split() == [str(os.getpid())] * 2


def test_with_ray_puts_the_episodes_on_ray(monkeypatch):
    import agent_cli.main
    from agent_cli.ajet import main

    calls = []
    monkeypatch.setattr(agent_cli.main, "main", lambda argv: calls.append(argv) or 0)
    assert main(["--conf", "math_agent.yaml", "--backbone", "trinity", "--with-ray", "ajet.rollout.num_repeat=2"]) == 0
    assert calls == [["train", "--config", "math_agent.yaml", "ajet.rollout.num_repeat=2", "ajet.rollout.ray.enabled=true"]]


def test_config_typo_is_reported_with_the_nearest_key(tmp_path, capsys):
    from agent_cli.main import main

    config = tmp_path / "typo.yaml"
    config.write_text("ajet:\n  rollout:\n    agentscope_workflow: w.py->W\n    temprature: 0.5\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["debug", "--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "ajet.rollout.temprature" in err and "temperature" in err
