"""The config schema and loader: the tutorial's YAML loads as is, mistakes get precise messages, overrides, dumps."""

from __future__ import annotations

import copy
import re
import textwrap
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from agent_env.config import (
    AgentRLConfig,
    ConfigError,
    HuggingFaceReaderConfig,
    config_reference_markdown,
    dump_resolved,
    iter_keys,
    load_config,
)
from agent_env.loading import load_object

TUTORIAL = Path(__file__).resolve().parents[2] / "shared" / "seed" / "tune_your_first_agent.md"

# The YAML blocks of "Tune Your First Agent", verbatim, in order: steps 2, 3, 4, 5 (model) and the full example.
TUTORIAL_BLOCKS = [
    """\
ajet:
   project_name: math_agent

# ------------------ No need to modify ------------------
hydra:
  searchpath:
    - file://ajet/default_config
    - file://ajet/default_config/verl         # verl only
    - file://ajet/default_config/trinity      # trinity only

# ------------------ No need to modify ------------------
defaults:
  - verl_default # verl inherit 1/1
  - trinity_default # trinity inherit 1/1
  - astuner_default
  - _self_
""",
    """\
ajet:
  project_name: math_agent
  task_reader:
    type: huggingface_dat_repo
    huggingface_dat_repo:
      dataset_path: 'gsm8k/main'
      training_split: "train"
      validation_split: "test"
  data:
    train_batch_size: 264
    max_prompt_length: 3000
    max_response_length: 10000
""",
    """\
ajet:
  # ...
  rollout:
    agentscope_workflow: workflow.py->MathAgentWorkflow
  task_judge:
    judge_protocol: tutorial.example_math_agent.math_answer_as_judge->MathAnswerAsJudge
""",
    """\
ajet:
  model:
    path: Qwen/Qwen2.5-14B-Instruct
""",
    """\
ajet:
  # ...
  rollout:
    agentscope_workflow: workflow.py->MathAgentWorkflow
    temperature: 0.7
    max_env_worker: 64
    num_repeat: 4
    agent_madness_reward: 0.0
    tensor_model_parallel_size: 1
    max_num_seqs: 40
    multi_turn:
      max_sample_per_task: 4
    compute_madness_checklist:
      - "nonsense"
      - "wrong_toolcall"
    max_response_length_in_one_turn: 1024
    max_model_len: 13000

  trainer_common:
    save_freq: 99999
    test_freq: 99999
    total_epochs: 99999
    trinity_only__n_vllm_engine: 2

trinity:
  trainer:
    max_token_len_per_gpu: 13000
""",
]

MINIMAL = "ajet:\n  rollout:\n    env_id: agent_env/MathAgent-v0\n"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merged_yaml(blocks: list[str]) -> str:
    tree: dict[str, Any] = {}
    for block in blocks:
        tree = deep_merge(tree, yaml.safe_load(block))
    return yaml.safe_dump(tree, sort_keys=False)


def write_config(directory: Path, text: str, name: str = "math_agent.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path: Path, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return [str(p) for p in info.value.problems]


# --- the tutorial ---


def check_tutorial_config(config: AgentRLConfig) -> None:
    ajet = config.ajet
    assert ajet.project_name == "math_agent"
    assert ajet.task_reader.type == "huggingface_dat_repo"
    assert ajet.task_reader.huggingface_dat_repo.load_dataset_args() == ("openai/gsm8k", "main")
    assert ajet.task_reader.huggingface_dat_repo.validation_split == "test"
    assert (ajet.data.train_batch_size, ajet.data.max_prompt_length, ajet.data.max_response_length) == (
        264,
        3000,
        10000,
    )
    assert ajet.rollout.agentscope_workflow == "workflow.py->MathAgentWorkflow"
    assert ajet.rollout.temperature == 0.7
    assert ajet.rollout.max_num_seqs == 40
    assert ajet.rollout.multi_turn.max_sample_per_task == 4
    assert ajet.rollout.compute_madness_checklist == ["nonsense", "wrong_toolcall"]
    assert ajet.rollout.max_model_len == 13000
    assert ajet.model.path == "Qwen/Qwen2.5-14B-Instruct"
    assert ajet.trainer_common.save_freq == 99999
    assert (
        ajet.task_judge.judge_protocol
        == "tutorial.example_math_agent.math_answer_as_judge->MathAnswerAsJudge"
    )
    unused = {n.key: n.message for n in config.notices() if n.level == "unused"}
    assert set(unused) == {
        "hydra",
        "defaults",
        "trinity.trainer.max_token_len_per_gpu",
        "ajet.rollout.tensor_model_parallel_size",
        "ajet.trainer_common.trinity_only__n_vllm_engine",
    }
    assert all(message.startswith("accepted, not used: ") for message in unused.values())
    assert unused["ajet.rollout.tensor_model_parallel_size"] == (
        "accepted, not used: agent-rl runs one engine replica per GPU without tensor parallelism"
    )
    assert [n.level for n in config.notices()].count("warning") == 0


def test_tutorial_yaml_loads_with_all_its_blocks(tmp_path):
    config = load_config(write_config(tmp_path, merged_yaml(TUTORIAL_BLOCKS)))
    check_tutorial_config(config)


def test_tutorial_yaml_blocks_from_the_seed_document_load(tmp_path):
    if not TUTORIAL.exists():
        pytest.skip(f"{TUTORIAL} is absent")
    blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml[^\n]*\n(.*?)```", TUTORIAL.read_text(), re.S)]
    assert len(blocks) == len(TUTORIAL_BLOCKS)
    check_tutorial_config(load_config(write_config(tmp_path, merged_yaml(blocks))))


def test_tutorial_workflow_reference_resolves_next_to_the_yaml(tmp_path, monkeypatch):
    config_dir = tmp_path / "math_agent"
    write_config(config_dir, merged_yaml(TUTORIAL_BLOCKS))
    (config_dir / "workflow.py").write_text("class MathAgentWorkflow:\n    name = 'math_agent_workflow'\n")
    monkeypatch.chdir(tmp_path)  # as in `ajet --conf math_agent/math_agent.yaml`
    config = load_config("math_agent/math_agent.yaml")
    assert config.config_path == config_dir.resolve() / "math_agent.yaml"
    assert config.base_dir == config_dir.resolve()
    workflow_cls = load_object(config.ajet.rollout.agentscope_workflow, config.base_dir)
    assert workflow_cls.name == "math_agent_workflow"
    assert "config_path" not in config.to_yaml_dict() and "base_dir" not in config.to_yaml_dict()


def test_tutorial_blocks_pasted_one_after_another_are_rejected_not_silently_merged(tmp_path):
    path = write_config(tmp_path, TUTORIAL_BLOCKS[0] + TUTORIAL_BLOCKS[1])
    (message,) = problems_of(path)
    assert message.startswith(
        "not valid YAML: key 'ajet' appears twice in one mapping (lines 1 and 17); YAML would keep only the "
        "last one. Merge the two into one block."
    )


# --- unknown keys, wrong types, cross-field checks (messages pinned) ---


def test_typo_gives_key_path_line_and_suggestion(tmp_path):
    path = write_config(tmp_path, MINIMAL + "    temprature: 0.5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"Invalid config file {path.resolve()} (1 problem):\n"
        "  ajet.rollout.temprature (line 4): unknown key. Did you mean `temperature`? Rename it, or remove it."
    )


def test_unknown_key_without_a_near_name_lists_the_valid_ones(tmp_path):
    path = write_config(tmp_path, MINIMAL + "  data:\n    batch: 3\n")
    assert problems_of(path) == [
        "ajet.data.batch (line 5): unknown key; remove it or use one of the keys valid under ajet.data: "
        "train_batch_size, max_prompt_length, max_response_length, filter_zero_variance_groups, max_oversampling_rounds."
    ]


def test_unknown_top_level_block_is_an_error(tmp_path):
    path = write_config(tmp_path, MINIMAL + "trinty:\n  trainer: {}\n")
    assert problems_of(path) == [
        "trinty (line 4): unknown key. Did you mean `trinity`? Rename it, or remove it."
    ]


def test_wrong_types_say_expected_type_and_given_value(tmp_path):
    path = write_config(
        tmp_path,
        MINIMAL
        + "    num_repeat: four\n    multi_turn: 3\n  project_name: 2024\n  trainer_common:\n    val_before_train: maybe\n",
    )
    assert problems_of(path) == [
        "ajet.project_name (line 6): expected str, got 2024 (int). Put the value in quotes to make it text.",
        "ajet.rollout.num_repeat (line 4): expected int, got 'four' (str).",
        "ajet.rollout.multi_turn (line 5): expected a block of keys (a mapping), got 3 (int).",
        "ajet.trainer_common.val_before_train (line 8): expected bool, got 'maybe' (str).",
    ]


def test_choice_typo_suggests_the_nearest_choice(tmp_path):
    path = write_config(tmp_path, MINIMAL + "  task_reader:\n    type: huggingface\n")
    assert problems_of(path) == [
        "ajet.task_reader.type (line 5): 'huggingface' is not one of `arithmetic`, `huggingface_dat_repo`, "
        "`jsonl_dataset_file`, `dataset_file`, `env_service`. Did you mean `huggingface_dat_repo`?"
    ]


def test_out_of_range_value(tmp_path):
    path = write_config(tmp_path, MINIMAL + "    top_p: 1.5\n")
    assert problems_of(path) == ["ajet.rollout.top_p (line 4): must be less than or equal to 1, got 1.5."]


def test_bad_reference_syntax_is_caught_at_load_time(tmp_path):
    path = write_config(tmp_path, "ajet:\n  rollout:\n    agentscope_workflow: MathAgentWorkflow\n")
    (message,) = problems_of(path)
    assert message.startswith(
        "ajet.rollout.agentscope_workflow (line 3): Reference 'MathAgentWorkflow' has no `:` or `->`"
    )


def test_no_agent_and_missing_reader_block_say_what_to_add(tmp_path):
    path = write_config(tmp_path, "ajet:\n  task_reader:\n    type: huggingface_dat_repo\n")
    assert problems_of(path) == [
        "ajet.rollout: no agent to run. Add `agentscope_workflow: workflow.py->MathAgentWorkflow` (your Workflow "
        "class) or `env_id: agent_env/MathAgent-v0` (a registered env) under ajet.rollout.",
        "ajet.task_reader: type is `huggingface_dat_repo` but the block `ajet.task_reader.huggingface_dat_repo` "
        "is missing. Add under ajet.task_reader:\n    huggingface_dat_repo:\n      dataset_path: openai/gsm8k",
    ]


def test_missing_required_key_in_a_reader_block(tmp_path):
    path = write_config(
        tmp_path,
        MINIMAL + "  task_reader:\n    type: env_service\n    env_service:\n      env_url: http://h:1\n",
    )
    (message,) = problems_of(path)
    assert message.startswith(
        "ajet.task_reader.env_service.env_type (line 6): required key is missing; add `env_type:` under "
        "ajet.task_reader.env_service."
    )


def test_both_agent_keys_and_too_long_turn_are_errors(tmp_path):
    path = write_config(
        tmp_path,
        MINIMAL
        + "    agentscope_workflow: wf.py:W\n    max_model_len: 1024\n    max_response_length_in_one_turn: 1024\n",
    )
    assert problems_of(path) == [
        "ajet.rollout: both `agentscope_workflow` and `env_id` are set; keep one.",
        "ajet.rollout.max_response_length_in_one_turn: 1024 must be smaller than ajet.rollout.max_model_len "
        "(1024), or no prompt fits. Lower the first or raise the second.",
    ]


def test_num_repeat_one_is_a_warning_not_an_error(tmp_path):
    config = load_config(write_config(tmp_path, MINIMAL + "    num_repeat: 1\n"))
    warnings = [n for n in config.notices() if n.level == "warning"]
    assert [n.key for n in warnings] == ["ajet.rollout.num_repeat"]
    assert "GRPO compares the episodes of one task" in str(warnings[0])


def test_autocast_without_bf16_is_a_warning_and_engine_process_with_separate_placement_an_error(tmp_path):
    config = load_config(write_config(tmp_path, MINIMAL), ["ajet.learner.bf16=false", "ajet.learner.bf16_autocast=true"])
    warnings = [n for n in config.notices() if n.level == "warning"]
    assert [n.key for n in warnings] == ["ajet.learner.bf16_autocast"] and "nothing to autocast" in str(warnings[0])
    with pytest.raises(ConfigError, match="engine_process"):
        load_config(write_config(tmp_path, MINIMAL), ["ajet.rollout.engine_process=true", "ajet.rollout.placement=separate"])


def test_reader_block_for_another_type_is_reported_unused(tmp_path):
    path = write_config(
        tmp_path, MINIMAL + "  task_reader:\n    huggingface_dat_repo:\n      dataset_path: gsm8k\n"
    )
    config = load_config(path)
    assert [str(n) for n in config.notices()] == [
        "ajet.task_reader.huggingface_dat_repo: accepted, not used: ajet.task_reader.type is `arithmetic`"
    ]


def test_dataset_file_format_must_be_known(tmp_path):
    body = "  task_reader:\n    type: dataset_file\n    dataset_file:\n      training: {file_path: data/train.txt}\n"
    assert problems_of(write_config(tmp_path, MINIMAL + body)) == [
        "ajet.task_reader.dataset_file.training.file_path: cannot tell the format of 'data/train.txt' from its "
        "suffix. Use .jsonl, .json, .parquet or .csv, or set ajet.task_reader.dataset_file.format."
    ]
    config = load_config(write_config(tmp_path, MINIMAL + body + "      format: csv\n"))
    assert config.ajet.task_reader.source.format_of("data/train.txt") == "csv"


def test_empty_blocks_and_single_logger_name_are_accepted(tmp_path):
    config = load_config(
        write_config(tmp_path, MINIMAL + "  data:\n  trainer_common:\n    logger: tensorboard\n")
    )
    assert config.ajet.data.train_batch_size == 8
    assert config.ajet.trainer_common.logger == ["tensorboard"]


def test_assignment_is_validated():
    config = AgentRLConfig.model_validate(yaml.safe_load(MINIMAL))
    with pytest.raises(pydantic.ValidationError):
        config.ajet.rollout.temperature = "hot"


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml does not exist; pass the path of a YAML config file."):
        load_config(tmp_path / "nope.yaml")
    (message,) = problems_of(write_config(tmp_path, "ajet:\n  rollout: [\n"))
    assert message.startswith("not valid YAML:") and "line 3" in message
    assert problems_of(write_config(tmp_path, "- ajet\n")) == [
        "the file must be a mapping with an `ajet:` block, not a list."
    ]


# --- overrides ---


def test_dotted_overrides_parse_yaml_scalars_and_create_blocks(tmp_path):
    config = load_config(
        write_config(tmp_path, MINIMAL),
        [
            "ajet.rollout.temperature=0.5",
            "ajet.trainer_common.val_before_train=false",
            "ajet.rollout.compute_madness_checklist=[]",
            "ajet.task_reader.arithmetic.level=mix",
            "ajet.experiment_name=2024",
            "ajet.rollout.env_id=agent_env/Other-v1",
        ],
    )
    assert config.ajet.rollout.temperature == 0.5
    assert config.ajet.trainer_common.val_before_train is False
    assert config.ajet.rollout.compute_madness_checklist == []
    assert config.ajet.task_reader.arithmetic.level == "mix"
    assert config.ajet.rollout.env_id == "agent_env/Other-v1"
    assert config.ajet.experiment_name == "2024"  # a text key keeps the text
    assert "ajet.rollout.temperature" not in str(config.notices())


def test_unknown_override_key_errors_like_a_yaml_key(tmp_path):
    problems = problems_of(write_config(tmp_path, MINIMAL), ("ajet.rollout.temprature=0.5",))
    assert problems == [
        "ajet.rollout.temprature: unknown key. Did you mean `temperature`? Rename it, or remove it. "
        "(set by override `ajet.rollout.temprature=0.5`)"
    ]


def test_a_check_across_a_blocks_keys_names_the_overrides_it_is_about(tmp_path):
    overrides = ("ajet.learner.lr=1e-3", "ajet.learner.lora={r: 4}", "ajet.learner.zero_stage=3", "ajet.rollout.temperature=0.5")
    (problem,) = problems_of(write_config(tmp_path, MINIMAL), overrides)
    assert problem.startswith("ajet.learner: LoRA with ZeRO-3 is not supported")
    assert problem.endswith("(set by override `ajet.learner.lora={r: 4}`, `ajet.learner.zero_stage=3`)")


def test_dr_grpo_divides_by_the_runs_response_length_unless_told_otherwise(tmp_path):
    path = write_config(tmp_path, MINIMAL)
    dr_grpo = "ajet.learner.loss_aggregation=dr_grpo"
    assert load_config(path, (dr_grpo, "ajet.data.max_response_length=77")).ajet.learner.max_response_length == 77
    assert load_config(path, (dr_grpo,)).ajet.learner.max_response_length == load_config(path).ajet.data.max_response_length
    assert load_config(path, (dr_grpo, "ajet.learner.max_response_length=50")).ajet.learner.max_response_length == 50
    assert load_config(path).ajet.learner.max_response_length is None  # only dr_grpo needs one


def test_malformed_overrides(tmp_path):
    path = write_config(tmp_path, MINIMAL)
    assert problems_of(path, ("ajet.rollout.temperature",)) == [
        "override 'ajet.rollout.temperature' is not `dotted.key=value` (e.g. `ajet.rollout.temperature=0.5`)."
    ]
    assert problems_of(path, ("ajet.rollout.env_id.x=1",)) == [
        "ajet.rollout.env_id.x: override 'ajet.rollout.env_id.x=1': ajet.rollout.env_id is a str, not a block of keys."
    ]


# --- dumping and the reference ---


def test_dump_resolved_round_trips_every_key(tmp_path):
    config = load_config(
        write_config(tmp_path, merged_yaml(TUTORIAL_BLOCKS)), ["ajet.rollout.temperature=0.3"]
    )
    out = dump_resolved(config, tmp_path / "run" / "config.yaml")
    assert sorted(p.name for p in out.parent.iterdir()) == ["config.yaml"]  # no temp file left behind
    text = out.read_text()
    assert text.startswith("# Resolved config")
    reloaded = load_config(out)
    assert reloaded.to_yaml_dict() == config.to_yaml_dict()
    assert reloaded.ajet.rollout.temperature == 0.3
    assert (
        reloaded.ajet.rollout.max_env_worker == 64
        and "max_env_worker" in yaml.safe_load(text)["ajet"]["rollout"]
    )


def test_every_field_has_a_description():
    undocumented = [key.path for key in iter_keys(AgentRLConfig) if len(key.description.strip()) < 10]
    assert undocumented == []


def test_reference_markdown_has_one_row_per_key():
    markdown = config_reference_markdown()
    rows = [line for line in markdown.splitlines()[2:]]
    keys = [key.path for key in iter_keys(AgentRLConfig)]
    assert [re.match(r"\| `([^`]+)`", row).group(1) for row in rows] == keys
    for row in rows:  # four cells: escaped pipes inside cells do not split them
        assert len(re.split(r"(?<!\\)\|", row)) == 6, row
    assert "| `ajet.rollout.temperature` | `float` | `1.0` |" in markdown
    assert "*Accepted, not used: " in markdown


def test_tutorial_dataset_path_spellings():
    def args(**kw):
        return HuggingFaceReaderConfig(**kw).load_dataset_args()

    assert args(dataset_path="gsm8k/main") == ("openai/gsm8k", "main")
    assert args(dataset_path="openai/gsm8k") == ("openai/gsm8k", "main")
    assert args(dataset_path="openai/gsm8k", dataset_name="socratic") == ("openai/gsm8k", "socratic")
    assert args(dataset_path="/data/my_set") == ("/data/my_set", None)


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_example_config_loads(path):
    config = load_config(path)
    assert config.ajet.project_name == path.stem


def test_the_gpu_arithmetic_example_trains_what_the_benchmark_measured(monkeypatch):
    """examples/arithmetic/arithmetic_gpu.yaml is the settings of learn_arithmetic.py's format run (RESULTS.md)."""
    monkeypatch.syspath_prepend(str(EXAMPLES.parent / "benchmarks"))
    import learn_arithmetic

    example = load_config(EXAMPLES / "arithmetic" / "arithmetic_gpu.yaml").ajet.model_dump()
    measured = learn_arithmetic.ours_config("easy", lr=2e-5, format_weight=0.1, seed=0, groups=8, max_tokens=128,
                                            max_staleness=1, engine_process=True).ajet.model_dump()
    # What a run of the example may do differently: its name, length, validation, checkpoints, logs, the engine
    # named (the benchmark's `auto` picks vLLM on a GPU), and the micro-batch the benchmark sizes for a CPU here.
    differs = {("project_name",), ("task_reader", "arithmetic", "num_validation"), ("rollout", "engine"),
               ("trainer_common", "total_training_steps"), ("trainer_common", "test_freq"),
               ("trainer_common", "save_freq"), ("trainer_common", "val_before_train"), ("trainer_common", "logger"),
               ("learner", "max_tokens_per_micro_batch")}

    def leaves(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
        if isinstance(tree, dict):
            return {key: value for name, sub in tree.items() for key, value in leaves(sub, (*prefix, name)).items()}
        return {prefix: tree}

    mine, theirs = leaves(example), leaves(measured)
    assert {k: mine[k] for k in mine if k not in differs} == {k: theirs[k] for k in theirs if k not in differs}
    assert example["rollout"]["engine"] == "vllm" and example["learner"]["max_tokens_per_micro_batch"] == 32768
