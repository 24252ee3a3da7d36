"""`RolloutCollector`: many agent-env episodes on one event loop against one engine, token-in/token-out."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent_env.env import AgentEnv
from agent_env.messages import ToolUse, tool_use
from agent_env.types import Task

from agent_rl.engines.base import InferenceEngine, SamplingParams
from agent_rl.engines.scripted import ScriptedEngine
from agent_rl.rollout.madness import check_completion
from agent_rl.rollout.samples import TrainingSample
from agent_rl.rollout.tokens import HistoryRewritten, TemplateRenderer

logger = logging.getLogger("agent_rl")


@dataclass(frozen=True)
class RolloutLimits:
    """Token limits, named after the YAML keys they come from (`ajet.data.*`, `ajet.rollout.*`)."""

    max_prompt_length: int = 1024
    """Most tokens in the first prompt of a sample (`data.max_prompt_length`); beyond it: `context_overflow`."""
    max_response_length: int = 1024
    """Most tokens after the first prompt in one sample, sampled and inserted (`data.max_response_length`);
    reaching it ends the episode with `response_truncated`."""
    max_response_length_in_one_turn: int = 512
    """Most tokens the model may sample in one turn (`rollout.max_response_length_in_one_turn`); a turn cut
    here still goes to the agent, and the sample is flagged `response_truncated`."""
    max_model_len: int = 4096
    """Most tokens in one sequence, prompt and response (`rollout.max_model_len`); beyond it: `context_overflow`."""
    max_samples_per_episode: int = 4
    """Most training samples one episode may give (`rollout.multi_turn.max_sample_per_task`); each history
    rewrite starts a new sample; later ones are dropped and counted."""


class EnvLost(RuntimeError):
    """The env lost its episode through no fault of the episode: the process or machine hosting it died, or it
    stopped answering (e.g. a Ray actor, see `agent_rl.rollout.ray_envs`). `RolloutCollector.run_episode` then
    plays the episode again from its start with a fresh env, at most `max_env_restarts` times."""


@dataclass
class EpisodeRecord:
    """What happened in one episode, kept for metrics even when it produced no sample."""

    task_id: str
    group_id: str
    episode_id: str
    reward: float = 0.0
    is_success: bool = False
    termination_reason: str = ""
    num_turns: int = 0
    fallbacks: int = 0
    dropped_samples: int = 0
    response_truncated: bool = False
    madness: list[str] = field(default_factory=list)
    tool_call_errors: int = 0
    error: str | None = None
    env_restarts: int = 0
    """Times the episode was restarted from its start because its env was lost (`EnvLost`)."""
    env_lost: bool = False
    """The env was lost on the last allowed attempt too: the episode failed and gives no sample."""
    reward_components: dict[str, float] = field(default_factory=dict)
    """The judge's named parts of the reward (`JudgeResult.components`, e.g. `correct` and `format`)."""
    tools: ToolUse = field(default_factory=ToolUse)
    """Tool calls in the episode's final conversation and what came of them."""
    samples: list[TrainingSample] = field(default_factory=list)


@dataclass
class RolloutBatch:
    episodes: list[EpisodeRecord]
    elapsed_s: float

    @property
    def samples(self) -> list[TrainingSample]:
        return [sample for episode in self.episodes for sample in episode.samples]

    def metrics(self) -> dict[str, float]:
        """Namespaced metrics of this batch (defined in docs/metrics.md)."""
        episodes = self.episodes or [EpisodeRecord("", "", "")]
        samples = self.samples
        n = len(episodes)
        generated = sum(s.num_trained_tokens for s in samples)
        reasons = Counter(e.termination_reason or "failed" for e in episodes)
        madness = Counter(flag for e in episodes for flag in e.madness)
        metrics = {
            "reward/mean": sum(e.reward for e in episodes) / n,
            "reward/success_rate": sum(e.is_success for e in episodes) / n,
            "rollout/episodes": float(len(self.episodes)),
            "rollout/samples": float(len(samples)),
            "rollout/failed_episodes": float(sum(e.error is not None for e in self.episodes)),
            "rollout/fallback_samples": float(sum(e.fallbacks for e in self.episodes)),
            "rollout/dropped_samples": float(sum(e.dropped_samples for e in self.episodes)),
            "rollout/turns_mean": sum(e.num_turns for e in episodes) / n,
            "rollout/response_truncated_frac": sum(e.response_truncated for e in episodes) / n,
            "rollout/tool_call_errors_per_episode": sum(e.tool_call_errors for e in episodes) / n,
            "rollout/tool_call_rate": sum(e.tools.calls > 0 for e in episodes) / n,
            "rollout/tool_ran_rate": sum(e.tools.ran > 0 for e in episodes) / n,
            "rollout/tool_calls_per_episode": sum(e.tools.calls for e in episodes) / n,
            "rollout/tool_failures_per_episode": sum(e.tools.failed for e in episodes) / n,
            "rollout/env_lost_restarts": float(sum(e.env_restarts for e in self.episodes)),
            "rollout/env_lost_episodes": float(sum(e.env_lost for e in self.episodes)),
            "tokens/generated": float(generated),
            "tokens/prompt": float(sum(len(s.prompt_ids) for s in samples)),
            "tokens/response_mean": sum(len(s.response_ids) for s in samples) / max(1, len(samples)),
            "tokens/inserted_mean": sum(len(s.response_ids) - s.num_trained_tokens for s in samples) / max(1, len(samples)),
            "tokens/generated_per_s": generated / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "timing/rollout_s": self.elapsed_s,
        }
        metrics.update({f"termination/{reason}": count / n for reason, count in reasons.items()})
        metrics.update({f"madness/{flag}": count / n for flag, count in madness.items()})
        components: dict[str, list[float]] = {}
        for episode in self.episodes:
            for name, value in episode.reward_components.items():
                components.setdefault(name, []).append(float(value))
        metrics.update({f"reward/{name}": sum(values) / len(values) for name, values in components.items()
                        if f"reward/{name}" not in metrics})
        return metrics


class RolloutCollector:
    """Runs `len(tasks) * num_repeat` episodes concurrently (at most `max_concurrency` at once) and turns each
    into training samples as docs/design.md ("Tokens across turns") says: the first prompt is rendered with the
    chat template; each later prompt is the previous sequence plus the sampled ids plus the template's rendering
    of the new messages. A `ScriptedEngine` answers each turn's observation itself (`respond(obs, max_tokens)`).

    `env_factory()` returns a fresh `AgentEnv` (one per episode). A failing episode (engine, env or template
    error) is recorded with its traceback and gives no samples; the batch goes on. An env that raises `EnvLost`
    (its host died) has its episode played again from the start with a fresh env, the partial sample dropped,
    at most `max_env_restarts` times; then the episode fails like any other.
    """

    def __init__(
        self,
        env_factory: Callable[[], AgentEnv],
        engine: InferenceEngine,
        tokenizer: Any,
        sampling: SamplingParams,
        *,
        chat_template: str | None = None,
        limits: RolloutLimits = RolloutLimits(),
        max_concurrency: int = 64,
        madness_checks: Sequence[str] = (),
        madness_reward: float = 0.0,
        max_env_restarts: int = 2,
        on_close: Sequence[Callable[[], None]] = (),
    ) -> None:
        self.env_factory = env_factory
        self.engine = engine
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.renderer = TemplateRenderer(tokenizer, chat_template)
        self.limits = limits
        self.max_concurrency = max_concurrency
        self.madness_checks = tuple(madness_checks)
        self.madness_reward = madness_reward
        self.max_env_restarts = max_env_restarts
        self._on_close = list(on_close)
        self._special_tokens = [t for t in getattr(tokenizer, "all_special_tokens", []) if t]

    def close(self) -> None:
        """Release what the collector was given to own (`on_close`, e.g. a Ray actor pool); safe to call twice.
        The engine is not closed: it belongs to the caller."""
        closers, self._on_close = self._on_close, []
        for close in closers:
            close()

    async def collect(self, tasks: Sequence[Task], num_repeat: int, seed: int | None = None, sampling: SamplingParams | None = None,
                      *, first_index: int = 0) -> RolloutBatch:
        """All episodes of `tasks`, `num_repeat` each; a task's episodes share `group_id`
        (`{task_id}#{first_index + position}`: pass `first_index` to keep ids unique over several calls)."""
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.max_concurrency)
        params = sampling or self.sampling

        async def one(task: Task, index: int, repeat: int) -> EpisodeRecord:
            async with gate:
                group_id = f"{task.task_id}#{index}"
                episode_seed = None if seed is None else seed * 1_000_003 + index * 1_009 + repeat
                return await self.run_episode(task, group_id, f"{group_id}/{repeat}", repeat, params, episode_seed)

        episodes = await asyncio.gather(*(one(task, i, r) for i, task in enumerate(tasks, start=first_index) for r in range(num_repeat)))
        return RolloutBatch(list(episodes), time.perf_counter() - started)

    async def run_episode(self, task: Task, group_id: str, episode_id: str, repeat_index: int,
                          params: SamplingParams, seed: int | None = None) -> EpisodeRecord:
        restarts = 0
        while True:
            record = EpisodeRecord(task.task_id, group_id, episode_id, env_restarts=restarts)
            env = self.env_factory()
            try:
                await self._play(env, task, record, params, seed, repeat_index)
            except EnvLost as error:
                if restarts < self.max_env_restarts:
                    restarts += 1
                    logger.warning("episode %s lost its env (%s); playing it again from the start", episode_id, error)
                    continue
                record.env_lost = True
                self._fail(record, error)
            except Exception as error:  # noqa: BLE001 - one failing episode never takes the batch down
                self._fail(record, error)
            finally:
                await env.aclose()
            return record

    def _fail(self, record: EpisodeRecord, error: Exception) -> None:
        record.error = "".join(traceback.format_exception(error))
        record.samples = []
        logger.warning("episode %s failed and gives no samples:\n%s", record.episode_id, record.error)

    async def _play(self, env: AgentEnv, task: Task, record: EpisodeRecord, params: SamplingParams,
                    seed: int | None, repeat_index: int) -> None:
        limits, renderer = self.limits, self.renderer
        obs, info = await env.areset(options={"task": task, "episode_id": record.episode_id, "repeat_index": repeat_index})
        sample: TrainingSample | None = None
        kept: list[TrainingSample] = []
        previous_messages: list[dict[str, Any]] = []
        previous_tools: list[dict[str, Any]] = []
        sampled_end_of_turn = True
        total_reward = 0.0
        while True:
            stepped = False
            if not obs["call_id"]:  # the workflow ended without (further) model calls
                result = await env.astep("")
                break
            messages, tools = obs["messages"], obs["tools"]
            if sample is not None:
                try:
                    sample.append(renderer.continuation_ids(previous_messages, messages, tools, previous_tools, sampled_end_of_turn), trained=False)
                except HistoryRewritten:
                    record.fallbacks += 1
                    sample = None
            if sample is None:
                # an episode's first prompt is its group's (rendered once); one after a history rewrite is its own
                first = not kept and not record.dropped_samples
                prompt_ids = (renderer.first_prompt_ids if first else renderer.prompt_ids)(messages, tools)
                if len(prompt_ids) > limits.max_prompt_length or len(prompt_ids) >= limits.max_model_len:
                    result = await env.atruncate("context_overflow")
                    break
                sample = TrainingSample(record.task_id, record.group_id, record.episode_id, len(kept) + record.dropped_samples, prompt_ids)
                if len(kept) < limits.max_samples_per_episode:
                    kept.append(sample)
                else:
                    record.dropped_samples += 1
            room_in_sequence = limits.max_model_len - sample.total_length
            room_in_response = limits.max_response_length - len(sample.response_ids)
            if room_in_response < 0:  # the inserted tool results alone overran the budget: keep it, cut there
                sample.truncate(limits.max_response_length)
            if room_in_sequence <= 0:
                result = await env.atruncate("context_overflow")
                break
            if room_in_response <= 0:
                record.response_truncated = True
                result = await env.atruncate("response_truncated")
                break
            max_tokens = min(limits.max_response_length_in_one_turn, room_in_response, room_in_sequence)
            turn_seed = None if seed is None else seed * 131 + record.num_turns
            if isinstance(self.engine, ScriptedEngine):  # a policy answers the observation itself
                completion = self.engine.respond(obs, max_tokens)
            else:
                completion = (await self.engine.generate(sample.prompt_ids + sample.response_ids, replace(params, n=1, max_tokens=max_tokens, seed=turn_seed)))[0]
            sample.append(completion.token_ids, trained=True, logprobs=completion.logprobs)
            record.num_turns += 1
            sampled_end_of_turn = renderer.ends_turn(completion.token_ids)
            if completion.finish_reason == "length":
                record.response_truncated = True
                if max_tokens < limits.max_response_length_in_one_turn:  # a whole-sample budget ran out, not the turn cap
                    result = await env.atruncate("response_truncated" if max_tokens == room_in_response else "context_overflow")
                    break
            previous_messages, previous_tools = messages, tools
            result = await env.astep(completion.text)
            stepped = True
            obs, reward, terminated, truncated, info = result
            total_reward += float(reward)
            record.tool_call_errors += info.get("tool_call_errors", 0)
            for flag in check_completion(completion.token_ids, completion.text, info.get("tool_call_errors", 0), self._special_tokens, self.madness_checks):
                if flag not in record.madness:
                    record.madness.append(flag)
            if terminated or truncated:
                break
        obs, reward, terminated, truncated, info = result
        if not stepped:  # ended by atruncate() or by a workflow that stopped calling the model
            total_reward += float(reward)
        if not math.isfinite(total_reward):  # e.g. a NaN step reward: it would make every weight NaN
            raise ValueError(f"episode {record.episode_id} earned a non-finite reward ({total_reward}); it gives no samples")
        self._finish(record, kept, info, total_reward, obs)

    def _finish(self, record: EpisodeRecord, samples: list[TrainingSample], info: dict[str, Any], reward: float, obs: dict[str, Any]) -> None:
        record.termination_reason = info.get("termination_reason", "")
        record.is_success = bool(info.get("is_success", False))
        record.reward = self.madness_reward if record.madness else reward
        record.reward_components = dict(info.get("reward_components", {}))
        record.tools = tool_use(obs["messages"])
        for sample in samples:
            sample.reward = record.reward
            sample.reward_components = dict(record.reward_components)
            sample.is_success = record.is_success
            sample.termination_reason = record.termination_reason
            sample.response_truncated = record.response_truncated
            sample.num_turns = record.num_turns
            sample.madness = list(record.madness)
            sample.messages = obs["messages"]
            sample.text = self.tokenizer.decode(sample.prompt_ids + sample.response_ids)
        record.samples = samples

