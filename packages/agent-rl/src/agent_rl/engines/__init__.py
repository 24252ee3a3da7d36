"""Inference engines: the `InferenceEngine` protocol, its data types, and the HF and vLLM engines.

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

_LAZY = {"HFEngine": "agent_rl.engines.hf", "VLLMEngine": "agent_rl.engines.vllm"}

__all__ = [
    "Completion",
    "EngineClosedError",
    "FinishReason",
    "HFEngine",
    "InferenceEngine",
    "NamedTensors",
    "SamplingParams",
    "VLLMEngine",
]

if TYPE_CHECKING:
    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.vllm import VLLMEngine


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
