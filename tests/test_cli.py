"""`agent-rl` and `ajet`: commands, flags over YAML, errors that say what to do, the config reference, plots."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import yaml
from agent_cli import main as agent_rl
from agent_cli.ajet import main as ajet

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "math_agent"
TINY = "ajet.model.path=embedded:tiny-random-SmolLM2"
WORKFLOW = """
from ajet import Workflow, WorkflowOutput

class EchoWorkflow(Workflow):
    async def execute(self, workflow_task, model_tuner):
        return WorkflowOutput(reward=1.0)
"""


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A directory with a workflow file, as the tutorial's step 1 makes; the current directory."""
    (tmp_path / "workflow.py").write_text(WORKFLOW)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _config(directory: Path, body: str, name: str = "exp.yaml") -> Path:
    path = directory / name
    path.write_text("ajet:\n  rollout:\n    agentscope_workflow: workflow.py->EchoWorkflow\n" + body)
    return path


# ---------------------------------------------------------------------------------------------- the config reference


def test_docs_config_md_is_the_generated_reference():
    expected = agent_rl.reference_document()
    actual = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/config.md is stale: regenerate it with `uv run agent-rl config reference --write docs/config.md`"


def test_reference_lists_every_key_with_its_meaning():
    from agent_env.config import AgentRLConfig, iter_keys

    document = agent_rl.reference_document()
    for key in iter_keys(AgentRLConfig):
        if key.is_block and key.path.count(".") == 1:  # a block of the `ajet:` tree is a section
            assert f"## `{key.path}`\n\n{key.description}" in document
            continue
        row = next((line for line in document.splitlines() if line.startswith(f"| `{key.path}` |")), None)
        assert row is not None, f"{key.path} is missing from the reference"
        assert key.description.split("`")[0][:30] in row.replace("\\|", "|")


def test_config_reference_write_creates_the_file(tmp_path, capsys):
    target = tmp_path / "docs" / "config.md"
    assert agent_rl.main(["config", "reference", "--write", str(target)]) == 0
    assert target.read_text() == agent_rl.reference_document()


def test_help_of_config_driven_flags_comes_from_the_schema(capsys):
    from agent_env.config import DebugConfig, ValKwargsConfig

    with pytest.raises(SystemExit):
        agent_rl.main(["debug", "--help"])
    debug_help = " ".join(capsys.readouterr().out.split())
    assert DebugConfig.model_fields["num_tasks"].description.rstrip(".") in debug_help
    assert "ajet.debug.num_tasks; default 4" in debug_help
    with pytest.raises(SystemExit):
        agent_rl.main(["eval", "--help"])
    eval_help = " ".join(capsys.readouterr().out.split())
    assert ValKwargsConfig.model_fields["num_repeat"].description.rstrip(".") in eval_help


# ---------------------------------------------------------------------------------------------- config show, overrides


def test_config_show_prints_the_resolved_config_with_overrides(project, capsys):
    path = _config(project, "    temperature: 0.9\n")
    assert agent_rl.main(["config", "show", str(path), "ajet.rollout.temperature=0.3"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["ajet"]["rollout"]["temperature"] == 0.3  # the override beats the YAML
    assert resolved["ajet"]["data"]["train_batch_size"] == 8  # defaults filled in
    assert resolved["ajet"]["model"]["path"] == "embedded:SmolLM2-135M-Instruct"


def test_tutorial_config_notes_unused_blocks_and_keys(capsys):
    assert agent_rl.main(["config", "show", str(EXAMPLE / "math_agent.yaml")]) == 0
    err = capsys.readouterr().err
    for key in ("hydra", "defaults", "trinity.trainer.max_token_len_per_gpu", "ajet.trainer_common.trinity_only__n_vllm_engine"):
        assert f"note: {key}: accepted, not used" in err


# ---------------------------------------------------------------------------------------------- errors that teach


def _fails(argv: list[str], capsys) -> str:
    """The message of a command that stops with exit status 2 (a problem the user must fix)."""
    with pytest.raises(SystemExit) as exit_info:
        agent_rl.main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_wrong_type_names_key_line_and_expected_type(project, capsys):
    path = _config(project, "  data:\n    train_batch_size: many\n")
    err = _fails(["debug", "--config", str(path), TINY], capsys)
    assert "ajet.data.train_batch_size (line 5): expected int, got 'many' (str)." in err


def test_unknown_key_names_the_nearest_valid_key(project, capsys):
    path = _config(project, "    num_repat: 4\n")
    err = _fails(["config", "show", str(path)], capsys)
    assert "ajet.rollout.num_repat (line 4): unknown key. Did you mean `num_repeat`?" in err


def test_missing_workflow_file_says_where_it_was_looked_for(project, capsys):
    path = _config(project, "")
    path.write_text(path.read_text().replace("workflow.py", "flow.py"))
    err = _fails(["debug", "--config", str(path), TINY], capsys)
    assert "file 'flow.py' not found" in err and str(project / "flow.py") in err


def test_missing_workflow_class_suggests_the_nearest_name(project, capsys):
    path = _config(project, "")
    path.write_text(path.read_text().replace("EchoWorkflow", "EchoWorkflw"))
    err = _fails(["debug", "--config", str(path), TINY], capsys)
    assert "Did you mean `EchoWorkflow`?" in err


def test_missing_model_path_says_what_to_set(project, capsys):
    path = _config(project, "")
    err = _fails(["debug", "--config", str(path), "ajet.model.path=./no_such_model"], capsys)
    assert "ajet.model.path: ./no_such_model does not exist" in err
    assert "embedded:SmolLM2-135M-Instruct (works offline)" in err
    (project / "not_a_model").mkdir()
    err = _fails(["debug", "--config", str(path), "ajet.model.path=./not_a_model"], capsys)
    assert "is not a Hugging Face model directory (it has no config.json)" in err
    err = _fails(["debug", "--config", str(path), "ajet.model.path=embedded:SmolLM2-135M"], capsys)
    assert "Did you mean embedded:SmolLM2-135M-Instruct?" in err


def test_empty_dataset_says_which_source_to_check(project, capsys):
    (project / "tasks.jsonl").write_text("")
    path = _config(project, "  task_reader:\n    type: jsonl_dataset_file\n    jsonl_dataset_file:\n"
                            "      training:\n        file_path: tasks.jsonl\n")
    err = _fails(["debug", "--config", str(path), TINY], capsys)
    assert "the 'train' split of ajet.task_reader (jsonl_dataset_file) has no tasks" in err


def test_missing_dataset_file_names_the_path(project, capsys):
    path = _config(project, "  task_reader:\n    type: jsonl_dataset_file\n    jsonl_dataset_file:\n"
                            "      training:\n        file_path: missing.jsonl\n")
    err = _fails(["debug", "--config", str(path), TINY], capsys)
    assert "missing.jsonl" in err


def test_missing_split_for_eval_says_to_configure_it(project, capsys):
    (project / "tasks.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    path = _config(project, "  task_reader:\n    type: jsonl_dataset_file\n    jsonl_dataset_file:\n"
                            "      training:\n        file_path: tasks.jsonl\n")
    err = _fails(["eval", "--config", str(path), TINY], capsys)
    assert "has no 'validation' split" in err


def test_logview_of_a_missing_run_suggests_the_nearest(project, capsys):
    (project / "launcher_record" / "math_agent").mkdir(parents=True)
    err = _fails(["logview", "launcher_record/math_agnt"], capsys)
    assert "Did you mean launcher_record/math_agent?" in err


# ---------------------------------------------------------------------------------------------- train and ajet


@pytest.fixture
def recorded_train(monkeypatch) -> list[dict]:
    """`agent_cli.train.run_train` replaced by a recorder: these tests check the CLI's wiring, not training."""
    import agent_cli.train

    calls: list[dict] = []

    def run_train(config, max_steps=None, resume=False):
        calls.append({"config": config, "max_steps": max_steps, "resume": resume})
        return 0

    monkeypatch.setattr(agent_cli.train, "run_train", run_train)
    return calls


def test_train_passes_flags_and_overrides_to_run_train(project, recorded_train):
    path = _config(project, "    temperature: 0.9\n")
    assert agent_rl.main(["train", "--config", str(path), "--max-steps", "3", "--resume", TINY, "ajet.rollout.temperature=0.2"]) == 0
    (call,) = recorded_train
    assert (call["max_steps"], call["resume"]) == (3, True)
    assert call["config"].ajet.rollout.temperature == 0.2 and call["config"].config_path == path


def test_train_without_the_trainer_module_says_so(project, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "agent_cli.train", None)  # as if the module were not installed
    path = _config(project, "")
    err = _fails(["train", "--config", str(path), TINY], capsys)
    assert "this install has no trainer" in err and "agent-rl debug" in err


@pytest.mark.parametrize("backbone", ["trinity", "verl"])
def test_ajet_trinity_and_verl_run_our_learner_and_say_so(project, recorded_train, capsys, backbone):
    path = _config(project, "")
    assert ajet(["--conf", str(path), "--backbone", backbone, "--max-steps", "1", TINY]) == 0
    assert f"--backbone {backbone} runs agent-rl's own DeepSpeed GRPO learner" in capsys.readouterr().out
    assert recorded_train[0]["max_steps"] == 1


def test_ajet_deepspeed_trains_without_a_note(project, recorded_train, capsys):
    path = _config(project, "")
    assert ajet(["--conf", str(path), "--backbone", "deepspeed", TINY]) == 0
    assert "runs agent-rl's own" not in capsys.readouterr().out and len(recorded_train) == 1


def test_serve_and_endpoint_eval_are_the_agent_env_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        agent_rl.main(["serve", "--help"])
    assert exit_info.value.code == 0 and "usage: agent-env serve" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        agent_rl.main(["eval", "--endpoint", "http://127.0.0.1:9/v1", "--help"])
    assert exit_info.value.code == 0 and "usage: agent-env eval" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- eval with a local model


def test_eval_with_a_local_model_reports_accuracy_and_pass_at_k(tmp_path, monkeypatch, capsys):
    shutil.copy(EXAMPLE / "math_agent.yaml", tmp_path)
    shutil.copy(EXAMPLE / "workflow.py", tmp_path)
    monkeypatch.chdir(tmp_path)
    status = agent_rl.main(["eval", "--config", "math_agent.yaml", "--model", "embedded:tiny-random-SmolLM2", "-k", "2",
                            "--temperature", "1.0", "--num-tasks", "2", "ajet.rollout.max_response_length_in_one_turn=8"])
    assert status == 0
    out = capsys.readouterr().out
    assert "pass@2" in out and "2 tasks x k=2 = 4" in out
    report = json.loads((tmp_path / "launcher_record" / "math_agent" / "eval_validation.json").read_text())
    assert (report["num_tasks"], report["k"], report["num_episodes"]) == (2, 2, 4)
    assert report["metadata"]["temperature"] == 1.0 and report["metadata"]["model"] == "embedded:tiny-random-SmolLM2"
    assert sorted((e["task_index"], e["repeat_index"]) for e in report["episodes"]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(e["termination_reason"] for e in report["episodes"]) and all(e["messages"] for e in report["episodes"])


# ---------------------------------------------------------------------------------------------- plots


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and the CRC of its header chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    header, crc = data[16:29], struct.unpack(">I", data[29:33])[0]
    assert zlib.crc32(b"IHDR" + header) == crc
    assert data[-8:-4] == b"IEND"
    return struct.unpack(">II", header[:8])


def test_plots_of_reward_validation_accuracy_and_lengths_are_pngs(tmp_path):
    from agent_cli.plots import write_plots

    rows = [{"step": s, "reward/mean": s / 10, "reward/success_rate": s / 20, "tokens/response_mean": 50.0 + s,
             **({"val/accuracy": s / 10, "val/pass@4": s / 8} if s % 2 == 0 else {})} for s in range(1, 7)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "rew')
    paths = write_plots(tmp_path)
    assert [p.name for p in paths] == ["reward.png", "val_accuracy.png", "lengths.png"]
    assert all(p.parent == tmp_path / "plots" for p in paths)
    for path in paths:
        width, height = _png_size(path)
        assert width >= 400 and height >= 200


def test_plots_skip_what_was_never_logged(tmp_path):
    from agent_cli.plots import write_plots

    assert write_plots(tmp_path) == []  # no metrics.jsonl yet
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward/mean": 0.5}) + "\n")
    assert [p.name for p in write_plots(tmp_path)] == ["reward.png"]
