"""The float type chosen where none is configured: bf16 where the device multiplies it natively, else float32."""

from pathlib import Path

import pytest
import torch
from agent_rl.learner import LearnerConfig
from agent_rl.learner.engine_setup import use_bf16
from agent_rl.precision import default_dtype, native_bf16


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("reads the CPU's flags from /proc/cpuinfo (Linux)")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo lists no flags")


def test_the_cpu_counts_as_native_bf16_exactly_when_it_has_amx_or_avx512_bf16():
    flags = _cpu_flags()
    assert native_bf16("cpu") == bool({"amx_bf16", "avx512_bf16"} & flags)
    assert default_dtype("cpu") == (torch.bfloat16 if native_bf16("cpu") else torch.float32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU learner's choice")
def test_the_learner_trains_in_bf16_by_default_only_where_the_cpu_does_it_natively():
    assert use_bf16(LearnerConfig()) == native_bf16("cpu")
    assert use_bf16(LearnerConfig(bf16=True)) is True and use_bf16(LearnerConfig(bf16=False)) is False


def test_the_hf_engine_loads_a_model_path_in_the_devices_fast_dtype():
    from agent_rl.embedded_model import tiny_random_model_dir
    from agent_rl.engines.hf import HFEngine

    engine = HFEngine(tiny_random_model_dir(), device="cpu")
    assert next(engine.model.parameters()).dtype == default_dtype("cpu")
    explicit = HFEngine(tiny_random_model_dir(), device="cpu", dtype=torch.float32)
    assert next(explicit.model.parameters()).dtype == torch.float32
