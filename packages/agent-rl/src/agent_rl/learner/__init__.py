"""The GRPO learner on DeepSpeed: `Learner(model, LearnerConfig(...)).train_step(samples)`."""

from agent_rl.learner.config import LearnerConfig, LoraSettings
from agent_rl.learner.learner import Learner
from agent_rl.learner.weights import iter_named_weights

__all__ = ["Learner", "LearnerConfig", "LoraSettings", "iter_named_weights"]
