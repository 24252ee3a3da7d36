"""Inference engines: the `InferenceEngine` protocol, its data types, and the HF and vLLM engines.

`HFEngine` and `VLLMEngine` are imported on first use, so importing this package loads neither
`transformers` nor `vllm`.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
