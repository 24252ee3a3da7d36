"""Plumbing for the learner: the process group, the model (with LoRA), and the DeepSpeed engine around it."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
import torch.distributed as dist

from agent_rl.learner.config import LearnerConfig
from agent_rl.learner.schedule import warmup_cosine
from agent_rl.precision import native_bf16

logger = logging.getLogger("agent_rl")


def ensure_distributed() -> None:
    """Join the torch.distributed process group, or start a one-process group when none was launched.

    Under `torchrun` or the `deepspeed` launcher (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set) this joins
    their group (NCCL on GPUs, gloo on the CPU). A plain `python` process gets a group of one that needs no
    port. DeepSpeed insists on the LOCAL_RANK variable, so a process without one gets it set (0 for a group of
    one; else the rank modulo the GPUs of the host). An already initialised group is reused as is.
    """
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    launched = all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
    if not dist.is_initialized() and not launched:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if "LOCAL_RANK" not in os.environ:  # a user-made group or a launcher that does not set it
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
        os.environ["LOCAL_RANK"] = str(rank % max(1, torch.cuda.device_count()))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    deepspeed.init_distributed(dist_backend=backend)


def use_bf16(config: LearnerConfig) -> bool:
    """`config.bf16`, with None resolved to: bf16 where the learner's device multiplies bf16 natively (a GPU with
    bf16, a CPU with AMX-BF16 or AVX512-BF16; `agent_rl.precision.native_bf16`), else float32."""
    if config.bf16 is not None:
        return config.bf16
    return native_bf16("cuda" if torch.cuda.is_available() else "cpu")


def use_bf16_autocast(config: LearnerConfig) -> bool:
    """Whether bf16 trains under `torch.autocast` on float32 weights (`config.bf16_autocast`, None resolved to: on
    a GPU without ZeRO) rather than in DeepSpeed's bf16 mode. False when bf16 is off."""
    if not use_bf16(config):
        return False
    if config.bf16_autocast is not None:
        return config.bf16_autocast
    return torch.cuda.is_available() and config.zero_stage == 0


def deepspeed_bf16(config: LearnerConfig) -> bool:
    """Whether bf16 trains in DeepSpeed's bf16 mode (bf16 weights and gradients, a float32 master copy in its
    optimizer wrapper): bf16 on, not under autocast."""
    return use_bf16(config) and not use_bf16_autocast(config)


def learner_clips_gradients(config: LearnerConfig) -> bool:
    """Whether the learner clips the gradients itself: without ZeRO and without DeepSpeed's bf16 mode, where
    DeepSpeed would take two kernels per tensor (and record no norm); `get_total_norm` and `clip_grads_with_norm_`
    take a few fused ones. Elsewhere DeepSpeed's optimizer wrapper clips and records the norm."""
    return config.zero_stage == 0 and not deepspeed_bf16(config)


def deepspeed_config(config: LearnerConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config: ZeRO stage, precision and clipping. The optimizer and schedule are the client's.

    `train_batch_size` and the micro-batch size are bookkeeping only: the learner sizes micro-batches by tokens
    and marks the accumulation boundary itself (`set_gradient_accumulation_boundary`).
    """
    zero: dict[str, Any] = {"stage": config.zero_stage}
    if config.zero_stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=False, stage3_param_persistence_threshold=0)
    ds_config: dict[str, Any] = {
        "train_batch_size": world_size,
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0 if learner_clips_gradients(config) else config.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": deepspeed_bf16(config)},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**62,
        "wall_clock_breakdown": False,
    }
    if use_bf16_autocast(config):
        ds_config["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return ds_config


def load_model(model_path: str, config: LearnerConfig, ds_config: dict[str, Any]) -> torch.nn.Module:
    """Load the causal LM in float32 (DeepSpeed's bf16 mode keeps it as the master copy and casts the model; under
    autocast the model stays float32).

    Under ZeRO-3 the weights are partitioned while they load (transformers' `HfDeepSpeedConfig`), so no rank
    ever holds the whole model. That switch is global in transformers, so it is on only while this model loads:
    a later `from_pretrained` in the process (the HF engine's own copy of the weights, another learner) loads
    whole weights again.
    """
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if config.attn_implementation is not None:
        kwargs["attn_implementation"] = config.attn_implementation
    if config.zero_stage != 3:
        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    switch = HfDeepSpeedConfig(ds_config)  # noqa: F841 (transformers holds it by a weak reference while it lives)
    try:
        return AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    finally:
        unset_hf_deepspeed_config()


def prepare_model(model: torch.nn.Module, config: LearnerConfig) -> torch.nn.Module:
    """Switch dropout off, set up gradient checkpointing, and wrap the model with LoRA adapters if configured."""
    for module in model.modules():  # RL wants the same policy in the scoring and the training forward
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora is not None:
        model = _add_lora(model, config)
    if config.torch_compile:
        compile_decoder_layers(model)
    model.train()  # HF models only checkpoint activations in training mode; dropout is off above
    return model


def compile_decoder_layers(model: torch.nn.Module) -> int:
    """`torch.compile` every decoder layer of `model` in place (dynamic shapes); returns how many were compiled.

    Regional compilation: the layers share their code, so dynamo compiles one and reuses it for every layer (the
    weights are the compiled graph's inputs), which keeps the compile to tens of seconds where the whole model
    would take minutes, and the embedding, head and loss stay eager. The layers are the modules whose class the
    Hugging Face model names in `_no_split_modules` (e.g. `LlamaDecoderLayer`); a LoRA model's adapters are
    compiled with their layers.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [module for module in base.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(
            f"torch_compile found no decoder layers in {type(base).__name__}: it compiles the classes a transformers "
            "model lists in `_no_split_modules`, and this model lists none; set torch_compile to false."
        )
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)


def _add_lora(model: torch.nn.Module, config: LearnerConfig) -> torch.nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:  # pragma: no cover - peft is a dependency of agent-rl
        raise ImportError(
            "LoRA needs the `peft` package: `pip install peft`, or set lora to None."
        ) from error
    assert config.lora is not None
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return get_peft_model(model, lora)


def build_optimizer(model: torch.nn.Module, config: LearnerConfig) -> torch.optim.Optimizer:
    """A client `torch.optim.AdamW` (DeepSpeed's own optimizers JIT-compile an op first), decaying matrices only."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            shape = getattr(param, "ds_shape", param.shape)  # ZeRO-3 params are empty until gathered
            (decay if len(shape) >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # one fused kernel per update on a GPU without ZeRO (the parameters are the model's own, all on the GPU)
    fused = torch.cuda.is_available() and config.zero_stage == 0
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.lr, betas=config.betas, eps=config.adam_eps, fused=fused or None
    )


def lr_schedule(config: LearnerConfig):
    """A callable DeepSpeed turns into the scheduler of its wrapped optimizer: warm-up, then cosine (`warmup_cosine`)."""

    def make(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(step, config.warmup_steps, config.total_steps, config.min_lr_ratio),
        )

    return make
