"""Eval-only runs: drive an env over tasks with a policy, k episodes per task, and report accuracy and pass@k.

    policy = OpenAIChatPolicy("http://127.0.0.1:8000/v1", model="my-model")
    report = evaluate(lambda: agent_env.make("agent_env/MathAgent-v0"), policy, tasks, k=4, concurrency=16)
    print(report.format_table())

A policy is any async callable `obs -> action` (the completion text or an assistant message dict); it may
instead return a truncating `TerminationReason` to end the episode (e.g. `response_truncated` when the engine
cut the completion at its token limit). `agent-rl eval` passes one backed by a local engine.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import math
import os
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
from pydantic import BaseModel, ConfigDict, Field

from agent_env.termination import TerminationReason
from agent_env.tool_call_format import ToolCallFormat, get_tool_call_format
from agent_env.types import Task

__all__ = [
    "EVAL_ONLY_REASONS",
    "EpisodeResult",
    "EvalReport",
    "OpenAIChatPolicy",
    "Policy",
    "TaskResult",
    "aevaluate",
    "evaluate",
    "pass_at_k",
]

Observation = dict[str, Any]
Action = str | dict[str, Any]
Policy = Callable[[Observation], Awaitable[Action | TerminationReason]]
EnvFactory = Callable[[], gym.Env]

EVAL_ONLY_REASONS = ("policy_error", "env_error")
"""Episode ends an eval adds to `TerminationReason`'s: the policy raised (e.g. the endpoint failed after its
retries), or the env itself raised (e.g. a remote env's server went away). Both count as failures."""


# ----------------------------------------------------------------------------- the estimator


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator for one task (Chen et al. 2021, "Evaluating Large Language Models Trained
    on Code", eq. 1): with `n` samples of which `c` are correct,

        pass@k = 1 - C(n - c, k) / C(n, k)

    the probability that at least one of `k` samples drawn without replacement from the `n` is correct.
    Computed as `1 - prod_{i = n - c + 1}^{n} (1 - k / i)`, which avoids huge binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n; got n={n}, c={c}.")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 1 <= k <= n (at least k samples per task); got n={n}, k={k}.")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def reported_ks(k: int) -> list[int]:
    """The k values a report gives pass@k for: 1, the powers of two below `k`, and `k`."""
    return sorted({1, k} | {2**i for i in range(k.bit_length()) if 2**i <= k})


# ----------------------------------------------------------------------------- results


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EpisodeResult(_Model):
    """One episode of an eval."""

    task_index: int = Field(description="Position of the task in the evaluated list.")
    task_id: str
    repeat_index: int = Field(description="Which of the task's k episodes this is (0-based).")
    reward: float = Field(description="Sum of the episode's rewards (per-step rewards plus the final one).")
    is_success: bool
    turns: int = Field(description="Model calls answered (`info['turn']` at the end).")
    tool_calls: int = Field(description="Tool calls the policy wrote.")
    tool_call_errors: int = Field(description="Of those, calls that did not parse or named no offered tool.")
    termination_reason: str = Field(description="A `TerminationReason` value, or `policy_error` / `env_error`.")
    reward_components: dict[str, float] = Field(default_factory=dict)
    error: str | None = Field(None, description="Traceback of a policy, env, workflow or judge error.")
    messages: list[dict[str, Any]] = Field(default_factory=list, description="The final conversation.")


class TaskResult(_Model):
    """The k episodes of one task, summarised."""

    task_index: int
    task_id: str
    samples: int
    successes: int
    mean_reward: float


class EvalReport(_Model):
    """What an eval measured. `accuracy` is the mean `is_success` over all episodes (= pass@1's estimate);
    `pass_at_k[j]` is the unbiased pass@j averaged over tasks; `tool_call_error_rate` = tool-call errors /
    tool calls (0 when no tool was called)."""

    num_tasks: int
    k: int
    num_episodes: int
    accuracy: float
    pass_at_k: dict[int, float]
    mean_reward: float
    mean_turns: float
    tool_calls: int
    tool_call_errors: int
    tool_call_error_rate: float
    termination_reasons: dict[str, int]
    wall_time_s: float
    metadata: dict[str, Any] = Field(default_factory=dict, description="Where the numbers come from (model, endpoint, split, ...).")
    tasks: list[TaskResult] = Field(default_factory=list)
    episodes: list[EpisodeResult] = Field(default_factory=list)

    @classmethod
    def from_episodes(cls, episodes: Sequence[EpisodeResult], k: int, wall_time_s: float = 0.0,
                      metadata: dict[str, Any] | None = None) -> EvalReport:
        """Aggregate episodes (each task must have exactly `k`) into a report."""
        by_task: dict[int, list[EpisodeResult]] = collections.defaultdict(list)
        for episode in episodes:
            by_task[episode.task_index].append(episode)
        tasks = []
        for index in sorted(by_task):
            group = by_task[index]
            if len(group) != k:
                raise ValueError(f"Task {index} has {len(group)} episodes; a report with k={k} needs exactly {k} per task.")
            tasks.append(TaskResult(task_index=index, task_id=group[0].task_id, samples=len(group),
                                    successes=sum(e.is_success for e in group), mean_reward=_mean([e.reward for e in group])))
        tool_calls = sum(e.tool_calls for e in episodes)
        tool_call_errors = sum(e.tool_call_errors for e in episodes)
        return cls(
            num_tasks=len(tasks),
            k=k,
            num_episodes=len(episodes),
            accuracy=_mean([float(e.is_success) for e in episodes]),
            pass_at_k={j: _mean([pass_at_k(t.samples, t.successes, j) for t in tasks]) for j in reported_ks(k)},
            mean_reward=_mean([e.reward for e in episodes]),
            mean_turns=_mean([float(e.turns) for e in episodes]),
            tool_calls=tool_calls,
            tool_call_errors=tool_call_errors,
            tool_call_error_rate=tool_call_errors / tool_calls if tool_calls else 0.0,
            termination_reasons=dict(collections.Counter(e.termination_reason for e in episodes).most_common()),
            wall_time_s=wall_time_s,
            metadata=dict(metadata or {}),
            tasks=tasks,
            episodes=sorted(episodes, key=lambda e: (e.task_index, e.repeat_index)),
        )

    def summary(self) -> dict[str, Any]:
        """The headline numbers (no per-task or per-episode lists)."""
        return self.model_dump(mode="json", exclude={"tasks", "episodes"})

    def format_table(self) -> str:
        """The headline numbers as a two-column text table."""
        rows = [("episodes", f"{self.num_tasks} tasks x k={self.k} = {self.num_episodes}"), ("accuracy", f"{self.accuracy:.4f}")]
        rows += [(f"pass@{j}", f"{value:.4f}") for j, value in self.pass_at_k.items()]
        rows += [
            ("mean reward", f"{self.mean_reward:.4f}"),
            ("mean turns", f"{self.mean_turns:.2f}"),
            ("tool calls", str(self.tool_calls)),
            ("tool-call error rate", f"{self.tool_call_error_rate:.4f} ({self.tool_call_errors} errors)"),
        ]
        rows += [(f"ended: {reason}", str(count)) for reason, count in self.termination_reasons.items()]
        rows.append(("wall time", f"{self.wall_time_s:.1f} s"))
        width = max(len(name) for name, _ in rows)
        lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 5}"]
        lines += [f"{name:<{width}}  {value}" for name, value in rows]
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> Path:
        """Write the whole report (summary, per-task and per-episode results) as JSON, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.model_dump(mode="json"), handle, indent=2, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


# ----------------------------------------------------------------------------- the loop


async def aevaluate(
    env_factory: EnvFactory,
    policy: Policy,
    tasks: Sequence[Task],
    k: int = 1,
    concurrency: int = 16,
    *,
    keep_messages: bool = True,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> EvalReport:
    """Run `k` episodes of every task with `policy`, at most `concurrency` at once, and aggregate them.

    `env_factory()` is called once per concurrent worker, before any episode starts; each worker reuses its env for its episodes, picking
    the task with `reset(options={"task": task, "repeat_index": r})`. Envs with async twins (`AgentEnv`,
    `RemoteAgentEnv`) run on this loop; others run in threads. A policy or env that raises ends that episode
    (`policy_error` / `env_error`, a failure) and the eval goes on. `on_episode` is called after each episode
    (e.g. a progress bar).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}.")
    jobs: asyncio.Queue[tuple[int, Task, int]] = asyncio.Queue()
    for repeat_index in range(k):
        for task_index, task in enumerate(tasks):
            jobs.put_nowait((task_index, task, repeat_index))
    results: list[EpisodeResult] = []
    started = time.perf_counter()
    envs = [env_factory() for _ in range(min(concurrency, jobs.qsize()))]  # a broken factory fails before any episode

    async def worker(env: gym.Env) -> None:
        try:
            while not jobs.empty():
                task_index, task, repeat_index = jobs.get_nowait()
                result = await _run_episode(env, policy, task, task_index, repeat_index, keep_messages)
                results.append(result)
                if on_episode is not None:
                    on_episode(result)
        finally:
            await _close(env)

    await asyncio.gather(*(worker(env) for env in envs))
    return EvalReport.from_episodes(results, k, time.perf_counter() - started, metadata)


def evaluate(
    env_factory: EnvFactory,
    policy: Policy,
    tasks: Sequence[Task],
    k: int = 1,
    concurrency: int = 16,
    **kwargs: Any,
) -> EvalReport:
    """`aevaluate` for synchronous callers; also works inside a running event loop (Jupyter), where it runs the
    eval on a fresh loop in a helper thread."""
    coro = aevaluate(env_factory, policy, tasks, k, concurrency, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-env-eval") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _run_episode(env: gym.Env, policy: Policy, task: Task, task_index: int, repeat_index: int,
                       keep_messages: bool) -> EpisodeResult:
    base = {"task_index": task_index, "task_id": task.task_id or str(task_index), "repeat_index": repeat_index}
    counts = {"tool_calls": 0, "tool_call_errors": 0}
    total = 0.0
    info: dict[str, Any] = {}
    obs: Observation = {"messages": []}
    fmt = _tool_call_format(env)

    def ended(reason: str, error: str | None) -> EpisodeResult:
        messages = list(obs.get("messages", [])) if keep_messages else []
        return EpisodeResult(**base, **counts, reward=total, is_success=False, turns=int(info.get("turn", 0)),
                             termination_reason=reason, error=error, messages=messages)

    try:
        obs, info = await _call(env, "reset", options={"task": task, "repeat_index": repeat_index})
    except Exception:  # noqa: BLE001 - an env that fails ends this episode only
        return ended("env_error", traceback.format_exc())
    while True:
        try:
            action = await policy(obs)
        except Exception:  # noqa: BLE001 - a policy that fails ends this episode only
            await _close(env)
            return ended("policy_error", traceback.format_exc())
        try:
            if isinstance(action, TerminationReason):
                obs, reward, terminated, truncated, info = await _call(env, "truncate", action)
            else:
                counts["tool_calls"] += _count_tool_calls(action, fmt)
                obs, reward, terminated, truncated, info = await _call(env, "step", action)
        except Exception:  # noqa: BLE001
            await _close(env)
            return ended("env_error", traceback.format_exc())
        total += float(reward)
        counts["tool_call_errors"] += int(info.get("tool_call_errors", 0))
        if terminated or truncated:
            break
    return EpisodeResult(
        **base,
        **counts,
        reward=total,
        is_success=bool(info.get("is_success", False)),
        turns=int(info.get("turn", 0)),
        termination_reason=str(info.get("termination_reason", "truncated" if truncated else "terminated")),
        reward_components={key: float(value) for key, value in info.get("reward_components", {}).items()},
        error=info.get("error"),
        messages=list(obs.get("messages", [])) if keep_messages else [],
    )


async def _call(env: gym.Env, method: str, *args: Any, **kwargs: Any) -> Any:
    twin = getattr(env, f"a{method}", None)
    if twin is not None:
        return await twin(*args, **kwargs)
    return await asyncio.to_thread(getattr(env, method), *args, **kwargs)


async def _close(env: gym.Env) -> None:
    try:
        await _call(env, "close")
    except Exception:  # noqa: BLE001 - closing a broken env must not hide the episode's own result
        pass


def _tool_call_format(env: gym.Env) -> ToolCallFormat:
    fmt = getattr(env.unwrapped, "tool_call_format", None)
    return get_tool_call_format(fmt if fmt is not None else "hermes")


def _count_tool_calls(action: Action, fmt: ToolCallFormat) -> int:
    if isinstance(action, dict):
        return len(action.get("tool_calls") or [])
    return len(fmt.parse(action, "count").tool_calls)


# ----------------------------------------------------------------------------- an OpenAI-compatible policy


class OpenAIChatPolicy:
    """A policy backed by any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp, OpenAI, ...).

    For each observation it calls `chat.completions.create(messages=obs["messages"], tools=obs["tools"]
    (omitted when empty), tool_choice, response_format, temperature, ...)` and acts with the reply: an assistant
    message dict when the endpoint returned structured `tool_calls`, else the reply text (which the env parses
    with its tool-call format, so servers without a tool parser work too).

    Args:
        base_url: the API's base URL, e.g. `http://127.0.0.1:8000/v1`.
        model: model name; None asks the endpoint (`GET /models`) once and uses the first one it lists.
        api_key: sent as the bearer token; None reads `OPENAI_API_KEY`, else sends `EMPTY`.
        temperature, top_p, max_tokens: sampling parameters (None: the endpoint's default).
        extra_body: extra JSON fields for every request (e.g. vLLM's `{"top_k": 20}`).
        end_on_length: when the endpoint stops at `max_tokens` (`finish_reason == "length"`), end the episode
            with `response_truncated` (as the trainer does) instead of acting with the cut completion.
        timeout_s, max_retries: per request (the OpenAI client retries connection errors and 5xx/429).
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        *,
        temperature: float | None = 0.0,
        top_p: float | None = None,
        max_tokens: int | None = None,
        extra_body: dict[str, Any] | None = None,
        end_on_length: bool = False,
        timeout_s: float = 600.0,
        max_retries: int = 2,
    ) -> None:
        from openai import AsyncOpenAI

        self.base_url = base_url
        self.model = model
        self.sampling = {name: value for name, value in (("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens)) if value is not None}
        self.extra_body = dict(extra_body or {})
        self.end_on_length = end_on_length
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.client = AsyncOpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=max_retries)
        self._model_lock = asyncio.Lock()

    async def __call__(self, obs: Observation) -> Action | TerminationReason:
        request: dict[str, Any] = {"model": await self._model_name(), "messages": obs["messages"], **self.sampling}
        if obs.get("tools"):
            request["tools"] = obs["tools"]
            if obs.get("tool_choice"):
                choice = obs["tool_choice"]
                request["tool_choice"] = choice if choice in ("auto", "none", "required") else {"type": "function", "function": {"name": choice}}
        if obs.get("response_format"):
            request["response_format"] = {"type": "json_schema", "json_schema": {"name": "response", "schema": obs["response_format"]}}
        if self.extra_body:
            request["extra_body"] = self.extra_body
        completion = await self.client.chat.completions.create(**request)
        if not completion.choices:
            raise RuntimeError(f"The endpoint {self.base_url} returned no choices: {completion!r:.300}")
        choice = completion.choices[0]
        if self.end_on_length and choice.finish_reason == "length":
            return TerminationReason.RESPONSE_TRUNCATED
        message = choice.message
        if not message.tool_calls:
            return message.content or ""
        return {
            "role": "assistant",
            "content": message.content or "",
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}
                for call in message.tool_calls
            ],
        }

    async def _model_name(self) -> str:
        if self.model is None:
            async with self._model_lock:
                if self.model is None:
                    models = [model.id async for model in self.client.models.list()]
                    if not models:
                        raise RuntimeError(f"The endpoint {self.base_url} lists no models; pass the model name (--model NAME).")
                    self.model = models[0]
        return self.model

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.close()
