"""`LearnerConfig`: defined with the YAML schema (`agent_env.config.learner`, the `ajet.learner` block)."""

from agent_env.config.learner import LearnerConfig, LoraSettings

__all__ = ["LearnerConfig", "LoraSettings"]
