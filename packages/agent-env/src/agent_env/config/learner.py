"""`ajet.learner`: every knob of the GRPO learner (agent-rl's `Learner`), each documented once, here.

It lives with the rest of the YAML schema so that a config is validated, unknown keys included, before anything
heavy is imported; `agent_rl.learner.LearnerConfig` is this class.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agent_env.config.base import ConfigBlock

AdvantageScaling = Literal["group", "batch", "none"]
"""How centred rewards are scaled: `group` divides by the group's std (GRPO, DeepSeekMath); `batch` by the
std of the whole batch (Hu et al. 2025, "REINFORCE++"; TRL `scale_rewards="batch"`); `none` does not scale
(Dr. GRPO, Liu et al. 2025)."""
LossAggregation = Literal["token-mean", "seq-mean-token-mean", "dr_grpo"]
"""How per-token losses become one number (the names of verl's `loss_agg_mode`, TRL's `loss_type` in brackets):

- `token-mean` (TRL `dapo`, DAPO, Yu et al. 2025): Σ loss·mask / (trained tokens of the whole optimizer step,
  all micro-batches and ranks). Every trained token weighs the same, long responses are not down-weighted.
- `seq-mean-token-mean` (TRL `grpo`, DeepSeekMath): the mean over sequences of each sequence's token mean.
- `dr_grpo` (TRL `dr_grpo`, Liu et al. 2025): Σ loss·mask / (sequences × a constant max length), no
  length bias.
"""
TisMode = Literal["truncate", "mask"]
"""Truncated importance sampling against the engine: `truncate` caps the weight at C (Yao et al. 2025, "Your
efficient RL framework secretly brings you off-policy RL training"); `mask` zeroes tokens above C (TRL
`token_mask`)."""

__all__ = ["AdvantageScaling", "LearnerConfig", "LoraSettings", "LossAggregation", "TisMode"]


class LoraSettings(ConfigBlock):
    """Low-rank adapters (Hu et al. 2021, through `peft`): train `r`-rank updates of the target layers only."""

    r: int = Field(16, ge=1, description="Rank of each adapter.")
    alpha: float = Field(32.0, gt=0, description="Scale: the update is (alpha / r) · B A.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the adapters' input (0 keeps the policy deterministic)."
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Layers that get adapters: peft's `all-linear` (every linear layer but the output head) or module names such as ['q_proj', 'v_proj'].",
    )


class LearnerConfig(ConfigBlock):
    """How the `Learner` turns a rollout batch into optimizer updates. Defaults follow TRL's `GRPOConfig` and DAPO."""

    # --- Parameters that control the optimizer and its schedule
    lr: float = Field(
        1e-6,
        gt=0,
        description="Peak learning rate of AdamW (TRL's default 1e-6; the embedded model's arithmetic runs use 2e-5).",
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's (β1, β2).")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW's ε.")
    weight_decay: float = Field(
        0.0,
        ge=0,
        description="AdamW's decoupled weight decay, applied to matrices only (not to biases and norm weights).",
    )
    warmup_steps: int = Field(
        0, ge=0, description="Optimizer steps of linear warm-up from lr / warmup_steps to lr."
    )
    total_steps: int | None = Field(
        None,
        ge=1,
        description="Optimizer steps over which the LR decays along a cosine to lr · min_lr_ratio; None keeps it constant after the warm-up.",
    )
    min_lr_ratio: float = Field(
        0.0, ge=0, le=1, description="Floor of the cosine decay, as a fraction of lr."
    )
    grad_clip: float = Field(
        1.0,
        ge=0,
        description="Clip the global gradient norm to this value before each update; 0 disables clipping.",
    )

    # --- Parameters that control DeepSpeed and memory
    zero_stage: Literal[0, 1, 2, 3] = Field(
        0,
        description="DeepSpeed ZeRO stage: 0 plain data parallel, 1 shards optimizer state, 2 also gradients, 3 also parameters.",
    )
    bf16: bool | None = Field(
        None,
        description="Train in bfloat16 with float32 master weights; None: bf16 where the device multiplies bf16 natively "
        "(a GPU with bf16; a CPU with AMX-BF16 or AVX512-BF16, e.g. Intel Sapphire Rapids, AMD Zen 4), float32 elsewhere.",
    )
    bf16_autocast: bool | None = Field(
        None,
        description="How bf16 trains. True: float32 weights and gradients, the forward and backward passes in bf16 under "
        "torch.autocast (DeepSpeed's `torch_autocast`), the learner clips the gradients with fused kernels. False: "
        "DeepSpeed's bf16 mode, bf16 weights and gradients with a float32 master copy in the optimizer (without ZeRO "
        "its wrapper checks every gradient for inf/NaN with one host sync each). None: True on a GPU without ZeRO, "
        "False elsewhere (on a CPU the HF engine that shares the learner's module then samples in bf16).",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of storing them (less memory, about 30% more compute).",
    )
    max_tokens_per_micro_batch: int = Field(
        8192,
        ge=1,
        description="Most tokens in one forward/backward pass, padding included (rows × (longest prompt + longest response)).",
    )

    # --- Parameters that control the updates per rollout batch
    mini_batches: int = Field(
        1,
        ge=1,
        description="Optimizer steps per pass over a rollout batch: the batch is split into this many mini-batches.",
    )
    num_iterations: int = Field(
        1,
        ge=1,
        description="Passes over each rollout batch (μ in the GRPO paper); with mini_batches · num_iterations > 1 the later updates are off-policy and the clipping matters.",
    )

    # --- Parameters that control the GRPO loss
    temperature: float = Field(
        1.0,
        gt=0,
        description="The sampling temperature: logits are divided by it before the log-softmax, so learner and engine score the same distribution.",
    )
    advantage_scaling: AdvantageScaling = Field(
        "group",
        description="'group': (r - mean_g) / (std_g + ε) (GRPO); 'batch': std over the whole batch; 'none': r - mean_g (Dr. GRPO).",
    )
    advantage_eps: float = Field(
        1e-4, gt=0, description="ε added to the std when scaling advantages (TRL's 1e-4)."
    )
    epsilon_low: float = Field(
        0.2, ge=0, lt=1, description="Lower clip: the ratio is clipped at 1 - epsilon_low (PPO's ε)."
    )
    epsilon_high: float = Field(
        0.28,
        ge=0,
        description="Upper clip: the ratio is clipped at 1 + epsilon_high; DAPO's clip-higher recommends 0.28.",
    )
    beta: float = Field(
        0.0,
        ge=0,
        description="Weight of the k3 KL to the reference model (the initial weights); 0 loads no reference (DAPO, Dr. GRPO); DeepSeek-R1 used 0.001.",
    )
    loss_aggregation: LossAggregation = Field(
        "token-mean",
        description="'token-mean': Σ loss / trained tokens of the whole optimizer step (DAPO; TRL 'dapo'); 'seq-mean-token-mean': mean of per-sequence token means (TRL 'grpo'); 'dr_grpo': Σ loss / (sequences · max_response_length).",
    )
    max_response_length: int | None = Field(
        None,
        ge=1,
        description="The constant length that 'dr_grpo' divides by: the most tokens a response may have. In a run's config it defaults to `ajet.data.max_response_length`.",
    )
    tis_cap: float | None = Field(
        2.0,
        gt=0,
        description="Truncated importance sampling against the engine's logprobs: weights exp(old_logp - engine_logp) are capped at this value; None turns the correction off.",
    )
    tis_mode: TisMode = Field(
        "truncate",
        description="'truncate' caps the weight at tis_cap; 'mask' drops tokens whose weight exceeds it.",
    )

    # --- Parameters that control the model
    lora: LoraSettings | None = Field(
        None,
        description="Train low-rank adapters instead of all weights (needs zero_stage ≤ 2); None trains every weight.",
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile each decoder layer (regional compilation, dynamic shapes; one compiled layer serves them all): fewer, fused kernels per step. The first step pays the compile (about 40 s for SmolLM2 on 2 CPU cores). Needs zero_stage ≤ 2.",
    )
    attn_implementation: str | None = Field(
        None,
        description="Attention kernel passed to from_pretrained ('sdpa', 'flash_attention_2', ...); None lets transformers choose.",
    )
    seed: int = Field(
        0, description="Seeds the adapters' initialisation (the learner draws no other random numbers)."
    )

    @model_validator(mode="after")
    def _check(self) -> LearnerConfig:
        if self.loss_aggregation == "dr_grpo" and self.max_response_length is None:
            raise ValueError(
                "loss_aggregation 'dr_grpo' divides by a constant length: set max_response_length (the most tokens a response may have)."
            )
        if self.lora is not None and self.zero_stage == 3:
            raise ValueError(
                "LoRA with ZeRO-3 is not supported: set zero_stage to 0, 1 or 2 (adapters and their optimizer state are small), or lora to None."
            )
        if self.torch_compile and self.zero_stage == 3:
            raise ValueError(
                "torch_compile with ZeRO-3 is not supported (its parameter gathers run inside each layer): set zero_stage to 0, 1 or 2, or torch_compile to false."
            )
        if self.total_steps is not None and self.total_steps < self.warmup_steps:
            raise ValueError(
                f"total_steps ({self.total_steps}) is shorter than warmup_steps ({self.warmup_steps}): raise total_steps or lower warmup_steps."
            )
        return self
