"""Inference engines: the `InferenceEngine` protocol, its data types, the HF and vLLM engines, and `ScriptedEngine`
(completions written by a policy, for demonstrations and baselines).

`HFEngine` and `VLLMEngine` are imported on first use, so importing this package loads neither
`transformers` nor `vllm`.
"""

from typing import TYPE_CHECKING

from agent_env.loading import lazy_exports

from agent_rl.engines.base import (
    Completion,
    EngineClosedError,
    FinishReason,
    InferenceEngine,
    NamedTensors,
    SamplingParams,
)

_LAZY = {"HFEngine": "agent_rl.engines.hf", "VLLMEngine": "agent_rl.engines.vllm", "ScriptedEngine": "agent_rl.engines.scripted"}

__all__ = [
    "Completion",
    "EngineClosedError",
    "FinishReason",
    "HFEngine",
    "InferenceEngine",
    "NamedTensors",
    "SamplingParams",
    "ScriptedEngine",
    "VLLMEngine",
]

if TYPE_CHECKING:
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.scripted import ScriptedEngine
    from agent_rl.engines.vllm import VLLMEngine


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
