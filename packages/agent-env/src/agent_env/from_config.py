"""Build what a YAML config describes: the task source of a split and a factory of fresh envs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent_env.types import Task

if TYPE_CHECKING:
    from agent_env.config import AgentRLConfig
    from agent_env.env import AgentEnv

Split = Literal["train", "validation"]


def tasks_from_config(config: AgentRLConfig, split: str) -> Sequence[Task] | None:
    """The tasks of `split` from `ajet.task_reader`: `train`, `validation`, or (for datasets and env services)
    any split name of the source. None when the source has no validation set configured."""
    from agent_env.tasks.factory import make_task_source

    reader = config.ajet.task_reader
    source = reader.source
    train = split == "train"
    if reader.type == "arithmetic":
        return make_task_source("arithmetic", level=source.level, split=split,
                                n=source.num_train if train else source.num_validation,
                                seed=source.train_seed if train else source.validation_seed)
    if reader.type in ("huggingface_dat_repo", "env_service"):
        name = source.training_split if train else source.validation_split if split == "validation" else split
        if not name:
            return None
        if reader.type == "env_service":
            from agent_env.service.client import EnvServiceTasks

            return EnvServiceTasks(source.env_url, source.env_type, name)
        path, config_name = source.load_dataset_args()
        if not Path(path).is_absolute() and (config.base_dir / path).exists():  # a dataset folder next to the YAML
            path = str(config.base_dir / path)
        return make_task_source("huggingface_dat_repo", dataset_path=path, config_name=config_name, split=name, **_field_mapping(source))
    files = {"train": source.training, "validation": source.validation}
    if split not in files:
        raise ValueError(f"ajet.task_reader.{reader.type} has the splits 'train' and 'validation'; got {split!r}.")
    entry = files[split]
    if entry is None:
        return None
    extra = {"format": source.format_of(entry.file_path)} if reader.type == "dataset_file" else {}
    return make_task_source("local_file", path=_resolve(config, entry.file_path), **_field_mapping(source), **extra)


def env_factory_from_config(config: AgentRLConfig, **overrides: Any) -> Callable[[], AgentEnv]:
    """A zero-argument function returning a fresh env as `ajet.rollout` and `ajet.task_judge` describe.

    Workflow and judge references are resolved once, here (so a bad reference fails before any episode);
    `overrides` replace `AgentEnv` keyword arguments (e.g. `max_prompt_tokens`, `count_tokens`).
    """
    from agent_env.env import AgentEnv
    from agent_env.loading import load_object
    from agent_env.registration import make

    rollout = config.ajet.rollout
    env_kwargs: dict[str, Any] = {
        "max_turns": rollout.multi_turn.max_steps,
        "episode_timeout_s": rollout.episode_timeout_s,
        "truncation_reward": rollout.truncation_reward,
        "workflow_error_reward": rollout.workflow_error_reward,
        "judge_error_reward": rollout.judge_error_reward,
        "tool_call_format": rollout.tool_call_format,
        "sandbox_python_tool": rollout.sandbox_python_tool,
        **overrides,
    }
    judge = _judge(config, load_object)
    if rollout.env_id:
        kwargs = {**dict(rollout.env_kwargs), **env_kwargs}
        if judge is not None:
            kwargs["judge"] = judge
        return lambda: make(rollout.env_id, **kwargs)
    workflow = load_object(rollout.agentscope_workflow, base_dir=config.base_dir)
    kwargs = {**env_kwargs, **dict(rollout.env_kwargs)}
    return lambda: AgentEnv(workflow, judge, None, **kwargs)


def _judge(config: AgentRLConfig, load_object: Callable[..., Any]) -> Any:
    spec = config.ajet.task_judge.judge_protocol
    if not spec:
        return None
    judge = load_object(spec, base_dir=config.base_dir)
    return judge(**dict(config.ajet.task_judge.judge_kwargs)) if isinstance(judge, type) else judge


def _field_mapping(source: Any) -> dict[str, Any]:
    return {key: getattr(source, key) for key in ("query_field", "answer_field", "id_field") if hasattr(source, key)}


def _resolve(config: AgentRLConfig, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else config.base_dir / candidate
