"""`ajet.rollout`: which agent runs, how the model samples, and the limits and rewards of an episode."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agent_env.config.base import UNUSED_MARK, ConfigBlock, check_reference_syntax

__all__ = ["MultiTurnConfig", "RayConfig", "RolloutConfig", "ValKwargsConfig"]


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


class RayConfig(ConfigBlock):
    """Episodes in Ray actors across a cluster's nodes; the engine and the collector stay in this process."""

    enabled: bool = Field(
        False,
        description="Run the env side of every episode (workflow, tools, judge) in Ray actors, each hosting many "
        "episodes; only messages and completions travel. `--with-ray` sets it; setting `address` turns it on too.",
    )
    address: str | None = Field(
        None,
        description="The Ray cluster (`ray.init(address=...)`): `auto` joins the cluster `ray start` runs on "
        "this machine (an error if there is none), `host:port` joins that head node, `local` always starts a "
        "local cluster; null joins a running cluster if there is one (`RAY_ADDRESS`, or `ray start` on this "
        "machine), else starts a local one.",
    )
    num_actors: int = Field(
        0,
        ge=0,
        description="Env actors to start, spread across the nodes; 0: as many as the cluster's CPUs allow at "
        "`num_cpus_per_actor` each. `max_env_worker` still caps the episodes running at once, over all actors.",
    )
    num_cpus_per_actor: float = Field(
        1.0,
        gt=0.0,
        description="CPUs Ray reserves for each env actor (its episodes' tools and judge run in that process "
        "and its children).",
    )
    placement: Literal["least_loaded", "round_robin"] = Field(
        "least_loaded",
        description="Which actor hosts a new episode: `least_loaded` (the one with the fewest open episodes) or "
        "`round_robin`.",
    )
    max_episode_retries: int = Field(
        2,
        ge=0,
        description="Times an episode whose actor died or stopped answering is played again from its start on "
        "another actor (a dead actor is replaced); beyond it the episode fails. Counted in "
        "`rollout/env_lost_restarts` and `rollout/env_lost_episodes`.",
    )
    step_timeout_s: float | None = Field(
        None,
        gt=0.0,
        description="Most seconds the driver waits for one env call (reset, step, truncate) before it counts "
        "the episode as lost; null: `episode_timeout_s` + 180 (the workflow's own limit plus the judge's).",
    )
    runtime_env: dict[str, Any] = Field(
        default_factory=dict,
        description="Ray `runtime_env` of the env actors, e.g. `{env_vars: {...}}` or `{py_modules: [...]}`. "
        "Every node needs the packages the env imports, and the workflow file at the same path.",
    )

    @model_validator(mode="before")
    @classmethod
    def _address_turns_it_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("address") is not None and "enabled" not in data:
            return {**data, "enabled": True}
        return data


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
    ray: RayConfig = Field(
        default_factory=RayConfig,
        description="Env episodes on a Ray cluster (`--with-ray`).",
    )
    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="Rollout engine: `vllm` (GPU, needs `agent-rl[vllm]`), `hf` (`transformers`; CPU or GPU; on one "
        "process it generates with the learner's own weights, so no weight sync is needed), or `auto` (vLLM when "
        "it is installed and a GPU is present, else hf).",
    )
    placement: Literal["colocated", "separate"] = Field(
        "colocated",
        description="Where the rollout engine runs: `colocated` (on the GPU of the learner's rank 0, sharing it) or "
        "`separate` (on GPUs of its own, `engine_gpus`, with the learner's ranks on the others; vLLM then gets the new "
        "weights by NCCL broadcast from the learner's rank 0 after each step). Launch the learner with "
        "`torchrun --nproc-per-node <GPUs - engine GPUs>`.",
    )
    engine_gpus: list[int] | None = Field(
        None,
        min_length=1,
        description="With `placement: separate`: the GPUs of rank 0's node that the engine uses (indices as that "
        "process sees them; vLLM runs tensor-parallel over all of them). null: the last GPU. They must not be GPUs "
        "of learner ranks (local ranks 0..nproc-per-node-1).",
    )
    engine_process: bool = Field(
        False,
        description="Build and run the rollout engine in a child process of its own (`agent_rl.engines.process."
        "EngineProcess`): its per-token Python work (vLLM's front end) then has its own GIL instead of taking the "
        "learner's, which matters when collection overlaps learning (`trainer_common.max_staleness: 1`). The HF "
        "engine then loads a copy of the weights in that process. Colocated placement only.",
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
