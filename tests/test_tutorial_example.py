"""The tutorial's math agent, as shipped in examples/math_agent, runs through the config and the env."""

from __future__ import annotations

import json
from pathlib import Path

from agent_env.config import load_config
from agent_env.from_config import env_factory_from_config, tasks_from_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "math_agent"
TUTORIAL = Path(__file__).resolve().parents[2] / "shared" / "seed" / "tune_your_first_agent.md"


def test_example_workflow_is_the_tutorials_verbatim():
    if not TUTORIAL.exists():
        import pytest

        pytest.skip("the tutorial text is only in the development checkout")
    text = TUTORIAL.read_text()
    assert (EXAMPLE / "workflow.py").read_text() in text


def test_tutorial_workflow_solves_a_task_with_the_python_tool_and_is_judged():
    config = load_config(EXAMPLE / "math_agent.yaml")
    unused = {notice.key for notice in config.notices()}
    assert {"hydra", "defaults"} <= unused
    tasks = tasks_from_config(config, "train")
    task = tasks[0]
    env = env_factory_from_config(config)()
    obs, info = env.reset(options={"task": task})
    assert obs["messages"][-1]["content"] == task.main_query
    question = task.main_query.removeprefix("What is ").removesuffix("?")
    call = {"name": "execute_python_code", "arguments": {"code": f"print({question})"}}
    obs, reward, terminated, truncated, info = env.step(f"<tool_call>{json.dumps(call)}</tool_call>")
    assert not terminated and f"<stdout>{task.metadata['answer']}" in obs["messages"][-1]["content"]
    _, reward, terminated, _, info = env.step(f"So the answer is \\boxed{{{task.metadata['answer']}}}.")
    assert terminated and reward == 1.0 and info["is_success"] is True
    env.close()


def test_validation_split_differs_from_training():
    config = load_config(EXAMPLE / "math_agent.yaml")
    train, validation = tasks_from_config(config, "train"), tasks_from_config(config, "validation")
    assert len(validation) == 256
    assert {t.task_id for t in train[:50]}.isdisjoint({t.task_id for t in validation})
