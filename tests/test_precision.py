"""The float type chosen where none is configured: bf16 where the device multiplies it natively, else float32."""

from pathlib import Path

import pytest
import torch
from agent_rl.learner import LearnerConfig
from agent_rl.learner.engine_setup import deepspeed_config, use_bf16, use_bf16_autocast
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU learner's choice")
def test_bf16_trains_under_autocast_only_where_chosen_on_the_cpu_and_deepspeed_gets_one_mode():
    # on the CPU the default keeps DeepSpeed's bf16 weights (the HF engine sharing the module samples in bf16)
    assert use_bf16_autocast(LearnerConfig(bf16=True)) is False
    assert use_bf16_autocast(LearnerConfig(bf16=False, bf16_autocast=True)) is False  # nothing to autocast
    weights = deepspeed_config(LearnerConfig(bf16=True, grad_clip=0.5), world_size=1)
    assert weights["bf16"]["enabled"] and "torch_autocast" not in weights and weights["gradient_clipping"] == 0.5
    autocast = deepspeed_config(LearnerConfig(bf16=True, bf16_autocast=True, grad_clip=0.5), world_size=1)
    assert not autocast["bf16"]["enabled"] and autocast["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert autocast["gradient_clipping"] == 0.0  # the learner clips without ZeRO
    zero2 = deepspeed_config(LearnerConfig(bf16=True, bf16_autocast=True, grad_clip=0.5, zero_stage=2), world_size=1)
    assert zero2["gradient_clipping"] == 0.5  # ZeRO's optimizer wrapper clips


def test_the_hf_engine_loads_a_model_path_in_the_devices_fast_dtype():
    from agent_rl.embedded_model import tiny_random_model_dir
    from agent_rl.engines.hf import HFEngine

    engine = HFEngine(tiny_random_model_dir(), device="cpu")
    assert next(engine.model.parameters()).dtype == default_dtype("cpu")
    explicit = HFEngine(tiny_random_model_dir(), device="cpu", dtype=torch.float32)
    assert next(explicit.model.parameters()).dtype == torch.float32
