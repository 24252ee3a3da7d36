"""The validated config of a run: the tutorial's YAML (`ajet:` tree) as pydantic models, its loader and reference.

    config = load_config("math_agent/math_agent.yaml", overrides=["ajet.rollout.temperature=0.7"])
    for notice in config.notices():   # unused tutorial blocks/keys, warnings
        print(notice)
    workflow_cls = load_object(config.ajet.rollout.agentscope_workflow, config.base_dir)

Every key is documented once, in its `Field(description=...)`; `config_reference_markdown()` renders them all.
"""

from agent_env.config.base import ConfigBlock
from agent_env.config.learner import LearnerConfig, LoraSettings
from agent_env.config.loader import (
    ConfigError,
    ConfigProblem,
    apply_overrides,
    dump_resolved,
    load_config,
    validate_config,
)
from agent_env.config.reference import config_reference_markdown, iter_keys
from agent_env.config.rollout import MultiTurnConfig, RolloutConfig, ValKwargsConfig
from agent_env.config.schema import (
    AgentRLConfig,
    AjetConfig,
    ColdStartConfig,
    ConfigNotice,
    DataConfig,
    DebugConfig,
    ModelConfig,
    TaskJudgeConfig,
    TrainerCommonConfig,
)
from agent_env.config.task_reader import (
    ArithmeticReaderConfig,
    DataFileConfig,
    DatasetFileReaderConfig,
    EnvServiceReaderConfig,
    HuggingFaceReaderConfig,
    JsonlDatasetFileReaderConfig,
    TaskReaderConfig,
)

__all__ = [
    "AgentRLConfig",
    "LearnerConfig",
    "LoraSettings",
    "AjetConfig",
    "ColdStartConfig",
    "ArithmeticReaderConfig",
    "ConfigBlock",
    "ConfigError",
    "ConfigNotice",
    "ConfigProblem",
    "DataConfig",
    "DataFileConfig",
    "DatasetFileReaderConfig",
    "DebugConfig",
    "EnvServiceReaderConfig",
    "HuggingFaceReaderConfig",
    "JsonlDatasetFileReaderConfig",
    "ModelConfig",
    "MultiTurnConfig",
    "RolloutConfig",
    "TaskJudgeConfig",
    "TaskReaderConfig",
    "TrainerCommonConfig",
    "ValKwargsConfig",
    "apply_overrides",
    "config_reference_markdown",
    "dump_resolved",
    "iter_keys",
    "load_config",
    "validate_config",
]
