"""`ajet.rollout`: which agent runs, how the model samples, and the limits and rewards of an episode."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from agent_env.config.base import UNUSED_MARK, ConfigBlock, check_reference_syntax

__all__ = ["MultiTurnConfig", "RolloutConfig", "ValKwargsConfig"]


class MultiTurnConfig(ConfigBlock):
    """Limits of a multi-turn episode."""

    max_sample_per_task: int = Field(
        4,
        ge=1,
        description="Most training samples kept from one episode. An episode is one sample while each model "
        "call's prompt extends the previous one; an agent that rewrites its history starts a new sample, and "
        "beyond this many the rest are dropped (and counted in a metric).",
    )
    max_steps: int = Field(
        8,
        ge=1,
        description="Most model calls in one episode; the next call ends the episode with `max_turns` "
        "(truncated, reward `ajet.rollout.truncation_reward`).",
    )


class ValKwargsConfig(ConfigBlock):
    """Sampling used for validation runs (they override the training values)."""

    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature for validation; 0.0 is greedy.")
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Nucleus-sampling threshold for validation; 1.0 is off."
    )
    top_k: int = Field(-1, ge=-1, description="Top-k sampling for validation; -1 is off.")
    num_repeat: int = Field(
        1,
        ge=1,
        description="Episodes per validation task; above 1 the validation also reports pass@k.",
    )


class RolloutConfig(ConfigBlock):
    """The agent being trained, its sampling parameters and per-episode limits and rewards."""

    agentscope_workflow: str | None = Field(
        None,
        description="Your `Workflow` class as a reference: `workflow.py->MathAgentWorkflow` (a file next to "
        "this YAML, tutorial spelling), `path/to/file.py:Class` or `pkg.module:Class`. Set this or `env_id`.",
    )
    env_id: str | None = Field(
        None,
        description="A registered Gymnasium env id to train on instead of a workflow, e.g. "
        "`agent_env/MathAgent-v0`. Set this or `agentscope_workflow`.",
    )
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the env (`gymnasium.make(env_id, **env_kwargs)`), or for the "
        "env built around `agentscope_workflow`.",
    )
    temperature: float = Field(
        1.0,
        ge=0.0,
        description="Sampling temperature of training rollouts. 1.0 samples the policy's own distribution: the "
        "episodes of a group stay diverse (GRPO learns only from reward differences within a group), and "
        "it is TRL's GRPO default and the anchor's. The tutorial uses 0.7; the learner divides logits by "
        "this value so both sides use the same distribution.",
    )
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Nucleus-sampling threshold of training rollouts; 1.0 is off."
    )
    top_k: int = Field(-1, ge=-1, description="Top-k sampling of training rollouts; -1 is off.")
    max_env_worker: int = Field(
        64,
        ge=1,
        description="Most episodes running at once (all on one event loop; no thread per episode).",
    )
    num_repeat: int = Field(
        4,
        ge=1,
        description="Episodes per task in a training step: the GRPO group size. Advantages compare the "
        "episodes of one task, so 1 gives zero advantages (allowed for debug runs, warned about).",
    )
    agent_madness_reward: float = Field(
        0.0,
        description="Reward of an episode flagged by a check of `compute_madness_checklist`, replacing the "
        "judge's (the tutorial's example: 0.0; AgentJet's default: -1.0).",
    )
    compute_madness_checklist: list[Literal["nonsense", "wrong_toolcall"]] = Field(
        default_factory=lambda: ["nonsense"],
        description="Checks that flag a degenerate episode: `nonsense` (leaked special tokens, runaway "
        "repetition) and `wrong_toolcall` (a tool call that cannot be parsed). Empty list: no checks.",
    )
    tensor_model_parallel_size: int = Field(
        1,
        ge=1,
        description="Tensor-parallel size of the rollout engine in AgentJet.",
        json_schema_extra={
            UNUSED_MARK: "agent-rl runs one engine replica per GPU without tensor parallelism"
        },
    )
    max_num_seqs: int = Field(
        128,
        ge=1,
        description="Most sequences the inference engine generates at once (vLLM `max_num_seqs`; the HF "
        "engine's batch size).",
    )
    gpu_memory_utilization: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Fraction of GPU memory vLLM may take for weights and KV cache. The learner shares the GPU "
        "(vLLM sleeps while it trains), so leave room for it. Ignored by the HF engine.",
    )
    multi_turn: MultiTurnConfig = Field(
        default_factory=MultiTurnConfig, description="Multi-turn episode limits."
    )
    max_response_length_in_one_turn: int = Field(
        1024,
        ge=1,
        description="Most tokens the model may generate in one call (the engine's `max_tokens`).",
    )
    max_model_len: int = Field(
        4096,
        ge=1,
        description="Context length of an episode in tokens (prompt + everything generated and inserted). "
        "A model call whose prompt leaves less than `max_response_length_in_one_turn` ends the episode "
        "with `context_overflow`. The tutorial uses 13000 for a 14B model.",
    )
    val_kwargs: ValKwargsConfig = Field(
        default_factory=ValKwargsConfig, description="Sampling for validation."
    )
    truncation_reward: float = Field(
        0.0,
        description="Reward of an episode cut off by a limit (`max_turns`, `timeout`, `context_overflow`); "
        "such an episode is not judged.",
    )
    workflow_error_reward: float = Field(
        0.0,
        description="Reward of an episode whose workflow raised (`workflow_error`).",
    )
    judge_error_reward: float = Field(
        0.0, description="Reward of an episode whose judge raised (`judge_error`)."
    )
    episode_timeout_s: float = Field(
        600.0,
        gt=0.0,
        description="Wall-clock limit of one episode in seconds; past it the episode ends with `timeout`.",
    )
    tool_call_format: str = Field(
        "hermes",
        description="Name of the parser that turns completion text into tool calls; `hermes` reads "
        '`<tool_call>{"name": ..., "arguments": ...}</tool_call>` blocks.',
    )
    sandbox_python_tool: bool = Field(
        True,
        description="Replace agentscope's `execute_python_code` in the agent's toolkit with our sandboxed "
        "runner (separate process, time and memory limits). false: run the agent's tools unchanged.",
    )
    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="Rollout engine: `vllm` (GPU, needs `agent-rl[vllm]`), `hf` (`transformers`; CPU or GPU; on one "
        "process it generates with the learner's own weights, so no weight sync is needed), or `auto` (vLLM when "
        "it is installed and a GPU is present, else hf).",
    )

    @field_validator("agentscope_workflow")
    @classmethod
    def _check_reference_syntax(cls, value: str | None) -> str | None:
        return check_reference_syntax(value)

    @field_validator("env_id")
    @classmethod
    def _check_env_id(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "env_id is empty; give a registered id such as `agent_env/MathAgent-v0`, or null."
            )
        return value
