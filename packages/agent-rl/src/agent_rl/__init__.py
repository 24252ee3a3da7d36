"""agent-rl: GRPO training of the agents agent-env runs, with a vLLM (or `transformers`) engine and a DeepSpeed learner.

    import agent_rl
    agent_rl.train("examples/arithmetic/arithmetic.yaml", max_steps=4)   # what `agent-rl train --config` runs

The pieces, for a loop of your own: `Trainer` (collect → learn → sync, one `step()` at a time), `Learner` and
`LearnerConfig` (GRPO on DeepSpeed: `train_step(samples)`), `RolloutCollector` (episodes → `TrainingSample`s),
and the engines `HFEngine` and `VLLMEngine` with their `SamplingParams` and `Completion`. The names load their
modules on first use, so `import agent_rl` imports neither torch nor vLLM.
"""

from typing import TYPE_CHECKING

from agent_env.loading import lazy_exports

_EXPORTS = {
    "Completion": "agent_rl.engines.base",
    "HFEngine": "agent_rl.engines.hf",
    "Learner": "agent_rl.learner",
    "LearnerConfig": "agent_rl.learner",
    "RolloutCollector": "agent_rl.rollout.collector",
    "SamplingParams": "agent_rl.engines.base",
    "Trainer": "agent_rl.trainer",
    "TrainingSample": "agent_rl.rollout.samples",
    "VLLMEngine": "agent_rl.engines.vllm",
    "train": "agent_rl.trainer",
}

__all__ = [
    "Completion",
    "HFEngine",
    "Learner",
    "LearnerConfig",
    "RolloutCollector",
    "SamplingParams",
    "Trainer",
    "TrainingSample",
    "VLLMEngine",
    "train",
]

if TYPE_CHECKING:
    from agent_rl.engines.base import Completion, SamplingParams
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.vllm import VLLMEngine
    from agent_rl.learner import Learner, LearnerConfig
    from agent_rl.rollout.collector import RolloutCollector
    from agent_rl.rollout.samples import TrainingSample
    from agent_rl.trainer import Trainer, train


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
