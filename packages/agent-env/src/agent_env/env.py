"""`AgentEnv`: a workflow (the user's agent program) exposed as a Gymnasium env, suspended at every model call."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym

from agent_env.agentscope_hooks import install_toolkit_parse_error_hook
from agent_env.judge import JudgeResult, run_judge
from agent_env.messages import content_text, render_conversation
from agent_env.model_tuner import AssistantReply, ModelCallChannel, ModelRequest, ModelTuner
from agent_env.spaces import CompletionSpace, ConversationSpace
from agent_env.termination import TerminationReason
from agent_env.tool_call_format import (
    INVALID_TOOL_NAME,
    ParsedCompletion,
    ToolCall,
    ToolCallFormat,
    get_tool_call_format,
)
from agent_env.types import Task, WorkflowOutput, WorkflowTask
from agent_env.workflow import Workflow

logger = logging.getLogger("agent_env")

Observation = dict[str, Any]
Action = str | dict[str, Any]
StepResult = tuple[Observation, SupportsFloat, bool, bool, dict[str, Any]]

_CANCEL_GRACE_S = 2.0
"""How long a cut-off workflow gets to unwind (run its `finally` blocks) before the env stops waiting for it."""


class AgentEnv(gym.Env[Observation, Action]):
    """A multi-turn env whose dynamics are a `Workflow` and whose reward comes from a judge.

    The workflow (`async execute(workflow_task, model_tuner) -> WorkflowOutput`) owns its loop, memory and tools.
    The env runs it as a coroutine and suspends it at every call of `model_tuner`; the caller of `step` plays the
    model.

    Methods (each has an async twin: `areset`, `astep`, `atruncate`, `aclose`; the sync ones also work inside a
    running event loop, e.g. Jupyter):

    - `reset(seed=None, options=None) -> (obs, info)`: start an episode and run the workflow to its first model
      call. `options={"task": Task | dict}` picks the task (plus optional `"repeat_index"`, `"episode_id"`);
      otherwise one is drawn from `tasks` with the env's `np_random`.
    - `step(action) -> (obs, reward, terminated, truncated, info)`: answer the pending model call with `action`
      and run the workflow (tools included) to its next model call or to its end.
    - `truncate(reason) -> (obs, reward, terminated, truncated, info)`: end the episode from outside with a
      truncating `TerminationReason` (drivers use it for `context_overflow` and `response_truncated`).
    - `close()`: cancel a running workflow. Safe to call twice.

    Observation: `{"messages": [...], "tools": [...], "call_id": str}` — the conversation the workflow sent to the
    model (OpenAI chat format, string contents) and the tool schemas it offered; plus `"tool_choice"` and
    `"response_format"` (a JSON schema) when the call set them. After the episode ends, the observation is the
    last conversation with the final assistant message appended and `call_id == ""`.

    Action: the completion text, parsed into content + tool calls by `tool_call_format` (Hermes `<tool_call>` JSON
    by default), or an OpenAI assistant message dict (`{"role": "assistant", "content": ..., "tool_calls": [...]}`).
    A tool call that does not parse reaches the agent as a `ToolCallParseError` tool result; the episode goes on.

    Reward: per-step rewards the workflow gives with `model_tuner.add_reward(x)`, plus, on the last step, the
    episode's final reward: `WorkflowOutput.reward` if the workflow set it, else the judge's; for truncated
    episodes `truncation_reward` (they are not judged); for errors the matching `*_error_reward`. A non-finite
    reward (NaN, inf) from the workflow or the judge is such an error (`workflow_error` / `judge_error`).

    `terminated` is True when the workflow returned or raised, or the judge failed (the task ended); `truncated`
    is True when a limit outside the task cut it off (`max_turns`, `timeout`, `context_overflow`,
    `response_truncated`). See `agent_env.termination` for the table.

    Info keys, every step: `task_id`, `episode_id`, `turn` (model calls answered so far), `tool_call_errors`
    (tool calls of this action that did not parse or named no offered tool), `pending_calls` (further model
    calls already queued, e.g. by `asyncio.gather` over agents; answered first-in first-out). At the end also:
    `termination_reason`, `is_success`, `reward_components` (the judge's named parts), `log_metrics` (the
    workflow's), `final_reward`, and `error` (a traceback) for `workflow_error`/`judge_error`.

    Limits: one step is one model call, so `max_turns` and Gymnasium's `max_episode_steps` count the same thing.
    `max_turns=N` (and `agent_env.make(id, max_episode_steps=N)`, which maps to it) truncates when the workflow
    asks for call N+1, labelled `max_turns`, with `truncation_reward`. `gymnasium.make(id, max_episode_steps=N)`
    adds Gymnasium's `TimeLimit`, which sets `truncated` after step N from outside, where the env cannot label it;
    when both are set the smaller limit wins. `episode_timeout_s` bounds the time the workflow itself runs
    (tools included), not the time the policy takes to answer.

    Attributes: `tasks` (the task source), `workflow_factory`, `judge`, `max_turns`, `tool_call_format`.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        workflow: type[Workflow] | Callable[[], Workflow],
        judge: Any = None,
        tasks: Sequence[Task] | None = None,
        *,
        max_turns: int = 8,
        episode_timeout_s: float | None = 600.0,
        judge_timeout_s: float | None = 120.0,
        truncation_reward: float = 0.0,
        workflow_error_reward: float = 0.0,
        judge_error_reward: float = 0.0,
        tool_call_format: str | ToolCallFormat = "hermes",
        max_prompt_tokens: int | None = None,
        count_tokens: Callable[[ModelRequest], int] | None = None,
        sandbox_python_tool: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(workflow, Workflow):
            raise TypeError(
                f"Pass the workflow class ({type(workflow).__name__}) or a zero-argument factory, not an instance: "
                "each episode gets a fresh workflow object."
            )
        if not callable(workflow):
            raise TypeError(f"`workflow` must be a Workflow subclass or a factory, got {workflow!r}.")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}.")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use one of {self.metadata['render_modes']} or None.")
        self.workflow_factory = workflow
        self.judge = judge
        self.tasks = tasks
        self.max_turns = max_turns
        self.episode_timeout_s = episode_timeout_s
        self.judge_timeout_s = judge_timeout_s
        self.truncation_reward = truncation_reward
        self.workflow_error_reward = workflow_error_reward
        self.judge_error_reward = judge_error_reward
        self.tool_call_format = get_tool_call_format(tool_call_format)
        self.max_prompt_tokens = max_prompt_tokens
        self.count_tokens = count_tokens
        self.sandbox_python_tool = sandbox_python_tool
        self.render_mode = render_mode
        self.observation_space = ConversationSpace()
        self.action_space = CompletionSpace()
        self._episode: _Episode | None = None
        self._last_obs: Observation | None = None
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        install_toolkit_parse_error_hook()
        if sandbox_python_tool:
            _install_sandboxed_python_tool()

    # ------------------------------------------------------------------ async API

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict[str, Any]]:
        super().reset(seed=seed)
        await self.aclose()
        options = dict(options or {})
        task = self._choose_task(options.pop("task", None))
        episode_id = str(options.pop("episode_id", "") or f"ep-{int(self.np_random.integers(0, 2**62)):016x}")
        repeat_index = int(options.pop("repeat_index", 0))
        if options:
            raise ValueError(f"Unknown reset options {sorted(options)}; accepted: 'task', 'episode_id', 'repeat_index'.")
        workflow_task = WorkflowTask(task=task, episode_id=episode_id, repeat_index=repeat_index)
        self._episode = episode = _Episode(self, workflow_task)
        request = await episode.advance()
        if isinstance(request, _End):
            # The workflow finished (or failed) without calling the model: the episode is over before it began;
            # the next step returns its final reward whatever the action.
            episode.pending_end = request
            obs = _observation(None, [])
        else:
            obs = _observation(request, [])
        self._last_obs = obs
        return obs, episode.info()

    async def astep(self, action: Action) -> StepResult:
        episode = self._require_episode("step")
        if episode.pending_end is not None:
            return self._end_step(episode, await episode.finish(episode.pending_end))
        request = episode.current
        assert request is not None and request.reply is not None
        reply = self._parse_action(action, request)
        episode.turn += 1
        episode.tool_call_errors = _count_tool_call_errors(reply.parsed, request.tools)
        episode.last_messages = [*request.messages, reply.message]
        request.reply.set_result(reply)
        outcome = await episode.advance()
        if isinstance(outcome, _End):
            return self._end_step(episode, await episode.finish(outcome))
        obs = _observation(outcome, [])
        self._last_obs = obs
        return obs, episode.take_step_reward(), False, False, episode.info()

    async def atruncate(self, reason: TerminationReason | str) -> StepResult:
        reason = TerminationReason(reason)
        if not reason.truncates:
            raise ValueError(f"truncate() takes a truncating reason, one of {sorted(r.value for r in TerminationReason if r.truncates)}; got {reason.value!r}.")
        episode = self._require_episode("truncate")
        return self._end_step(episode, await episode.finish(_End(reason)))

    async def aclose(self) -> None:
        episode, self._episode = self._episode, None
        if episode is not None:
            await episode.cancel()

    # ------------------------------------------------------------------ sync API

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict[str, Any]]:
        return self._run_sync(self.areset(seed=seed, options=options))

    def step(self, action: Action) -> StepResult:
        return self._run_sync(self.astep(action))

    def truncate(self, reason: TerminationReason | str) -> StepResult:
        return self._run_sync(self.atruncate(reason))

    def close(self) -> None:
        if self._episode is not None:
            if self._episode.loop is self._sync_loop:
                self._run_sync(self.aclose())
            else:
                self._episode.runner.cancel()
                self._episode = None
        if self._sync_loop is not None and not self._sync_loop.is_running():
            self._sync_loop.close()
            self._sync_loop = None

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        messages = self._last_obs["messages"] if self._last_obs else []
        return render_conversation(messages)

    # ------------------------------------------------------------------ plumbing

    def _choose_task(self, task: Task | dict[str, Any] | None) -> Task:
        if task is not None:
            return task if isinstance(task, Task) else Task.model_validate(task)
        if not self.tasks:
            raise ValueError("This env has no task source; pass reset(options={'task': Task(...)}) or build it with tasks=[...].")
        return self.tasks[int(self.np_random.integers(len(self.tasks)))]

    def _require_episode(self, call: str) -> _Episode:
        episode = self._episode
        if episode is None or episode.ended:
            raise RuntimeError(f"{call}() was called without a running episode; call reset() first.")
        if asyncio.get_running_loop() is not episode.loop:
            raise RuntimeError(
                f"This episode runs on another event loop. An episode started with areset() continues with "
                f"a{call}() on the same loop; one started with reset() continues with {call}()."
            )
        return episode

    def _parse_action(self, action: Action, request: ModelRequest) -> AssistantReply:
        prefix = f"{request.call_id}-tool"
        if isinstance(action, str):
            return AssistantReply(self.tool_call_format.parse(action, prefix), action)
        if isinstance(action, dict):
            return AssistantReply(_parse_message_action(action, prefix), json.dumps(action, ensure_ascii=False))
        raise TypeError(f"An action is the completion text (str) or an assistant message dict; got {type(action).__name__}.")

    def _end_step(self, episode: _Episode, end: _Outcome) -> StepResult:
        obs = _observation(None, episode.last_messages)
        self._last_obs = obs
        reward = episode.take_step_reward() + end.reward
        info = episode.info() | end.info
        return obs, reward, not end.reason.truncates, end.reason.truncates, info

    def _run_sync(self, coro: Any) -> Any:
        if self._sync_loop is None or self._sync_loop.is_closed():
            self._sync_loop = asyncio.new_event_loop()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._sync_loop.run_until_complete(coro)
        # Called from inside a running event loop (Jupyter): run our private loop on a helper thread.
        return _helper_pool().submit(self._sync_loop.run_until_complete, coro).result()



class _End:
    """The workflow stopped (returned, raised) or the env cut it off."""

    def __init__(self, reason: TerminationReason, error: str | None = None) -> None:
        self.reason = reason
        self.error = error


class _Outcome:
    def __init__(self, reason: TerminationReason, reward: float, info: dict[str, Any]) -> None:
        self.reason = reason
        self.reward = reward
        self.info = info


class _Episode:
    """One run of a workflow: the coroutine, its model-call channel and its counters."""

    def __init__(self, env: AgentEnv, workflow_task: WorkflowTask) -> None:
        self.env = env
        self.workflow_task = workflow_task
        self.loop = asyncio.get_running_loop()
        self.channel = ModelCallChannel()
        self.model_tuner = ModelTuner(self.channel)
        self.turn = 0
        self.tool_call_errors = 0
        self.workflow_time_s = 0.0
        self.current: ModelRequest | None = None
        self.last_messages: list[dict[str, Any]] = []
        self.pending_end: _End | None = None
        self.ended = False
        self.runner = self.loop.create_task(self._run_workflow(), name=f"workflow {workflow_task.episode_id}")
        self.runner.add_done_callback(lambda _: self.channel.wake())

    async def _run_workflow(self) -> WorkflowOutput:
        workflow = self.env.workflow_factory()
        output = await workflow.execute(self.workflow_task, self.model_tuner)
        if isinstance(output, dict):
            output = WorkflowOutput.model_validate(output)
        if not isinstance(output, WorkflowOutput):
            raise TypeError(f"{type(workflow).__name__}.execute returned {output!r}; return a WorkflowOutput(...).")
        return output

    async def advance(self) -> ModelRequest | _End:
        """Run the workflow until it makes a model call (returned) or stops (an `_End`)."""
        channel = self.channel
        started = time.perf_counter()
        try:
            while not channel.pending and not self.runner.done():
                channel.waiter = self.loop.create_future()
                budget = self.env.episode_timeout_s
                if budget is None:
                    await channel.waiter
                else:
                    await asyncio.wait_for(channel.waiter, max(budget - self.workflow_time_s - (time.perf_counter() - started), 0.0))
        except TimeoutError:
            return _End(TerminationReason.TIMEOUT)
        finally:
            channel.waiter = None
            self.workflow_time_s += time.perf_counter() - started
        if channel.pending:
            request = channel.pending.popleft()
            self.current = request
            self.last_messages = request.messages
            if self.turn >= self.env.max_turns:
                return _End(TerminationReason.MAX_TURNS)
            if self.env.max_prompt_tokens is not None and self.env.count_tokens is not None:
                if self.env.count_tokens(request) > self.env.max_prompt_tokens:
                    return _End(TerminationReason.CONTEXT_OVERFLOW)
            return request
        error = self.runner.exception()
        if error is not None:
            return _End(TerminationReason.WORKFLOW_ERROR, "".join(traceback.format_exception(error)))
        return _End(TerminationReason.FINISHED)

    async def finish(self, end: _End) -> _Outcome:
        """Judge a finished episode, or price a cut-off one; then release the workflow."""
        self.ended = True
        env = self.env
        info: dict[str, Any] = {"termination_reason": end.reason.value, "is_success": False, "reward_components": {}, "log_metrics": {}}
        if end.reason is TerminationReason.FINISHED:
            output: WorkflowOutput = self.runner.result()
            info["log_metrics"] = dict(output.log_metrics)
            if output.reward is not None:
                reward, success = float(output.reward), bool(output.is_success if output.is_success is not None else output.reward > 0)
                if not math.isfinite(reward):  # one NaN reward would make every weight NaN in training
                    end = _End(TerminationReason.WORKFLOW_ERROR, f"The workflow returned a non-finite reward ({reward}).")
                    info["termination_reason"] = end.reason.value
                    reward, success = env.workflow_error_reward, False
            else:
                try:
                    verdict = await self._judge(output)
                    if not math.isfinite(verdict.reward):
                        raise ValueError(f"The judge {type(env.judge).__name__} returned a non-finite reward ({verdict.reward}).")
                except Exception as error:  # noqa: BLE001 - a failing judge ends this episode only
                    end = _End(TerminationReason.JUDGE_ERROR, "".join(traceback.format_exception(error)))
                    info["termination_reason"] = end.reason.value
                    reward, success = env.judge_error_reward, False
                else:
                    reward, success = verdict.reward, verdict.is_success
                    info["reward_components"] = dict(verdict.components)
            info["is_success"] = success
        elif end.reason is TerminationReason.WORKFLOW_ERROR:
            reward = env.workflow_error_reward
        else:
            reward = env.truncation_reward
            await self.cancel()
        if end.error:
            info["error"] = end.error
            logger.warning("episode %s ended with %s:\n%s", self.workflow_task.episode_id, end.reason.value, end.error)
        info["final_reward"] = reward
        return _Outcome(end.reason, reward, info)

    async def _judge(self, output: WorkflowOutput) -> JudgeResult:
        if self.env.judge is None:
            raise RuntimeError("The workflow returned reward=None and this env has no judge; configure a judge (task_judge.judge_protocol) or set WorkflowOutput.reward.")
        return await asyncio.wait_for(run_judge(self.env.judge, self.workflow_task, output), self.env.judge_timeout_s)

    async def cancel(self) -> None:
        """Stop the workflow: fail its waiting model calls, cancel it, give it a moment to unwind."""
        self.ended = True
        self.channel.close()
        if not self.runner.done():
            self.runner.cancel()
            await asyncio.wait([self.runner], timeout=_CANCEL_GRACE_S)
        if self.runner.done() and not self.runner.cancelled():
            self.runner.exception()  # mark retrieved: a cut-off workflow's error is expected, not news

    def take_step_reward(self) -> float:
        rewards, self.channel.step_rewards = self.channel.step_rewards, []
        return float(sum(rewards))

    def info(self) -> dict[str, Any]:
        return {
            "task_id": self.workflow_task.task_id,
            "episode_id": self.workflow_task.episode_id,
            "turn": self.turn,
            "tool_call_errors": self.tool_call_errors,
            "pending_calls": len(self.channel.pending),
        }


def _observation(request: ModelRequest | None, messages: list[dict[str, Any]]) -> Observation:
    if request is None:
        return {"messages": messages, "tools": [], "call_id": ""}
    obs: Observation = {"messages": request.messages, "tools": request.tools, "call_id": request.call_id}
    if request.tool_choice is not None:
        obs["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        obs["response_format"] = request.response_format
    return obs


def _parse_message_action(message: dict[str, Any], prefix: str) -> ParsedCompletion:
    if message.get("role", "assistant") != "assistant":
        raise ValueError(f"A message action must have role 'assistant', got {message.get('role')!r}.")
    calls = []
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function", {})
        raw = function.get("arguments", "{}")
        call_id = call.get("id") or f"{prefix}_{index}"
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else dict(raw)
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            calls.append(ToolCall(call_id, function.get("name") or INVALID_TOOL_NAME, {}, str(raw), f"the arguments are not valid JSON ({error})"))
            continue
        if not isinstance(arguments, dict):
            calls.append(ToolCall(call_id, function.get("name") or INVALID_TOOL_NAME, {}, str(raw), '"arguments" must be a JSON object'))
            continue
        calls.append(ToolCall(call_id, function.get("name") or INVALID_TOOL_NAME, arguments, str(raw)))
    return ParsedCompletion(content=content_text(message.get("content")), tool_calls=calls)


def _count_tool_call_errors(parsed: ParsedCompletion, tools: list[dict[str, Any]]) -> int:
    offered = {tool.get("function", {}).get("name") for tool in tools}
    return sum(1 for call in parsed.tool_calls if call.error or call.name not in offered)


_HELPER_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _helper_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _HELPER_POOL
    if _HELPER_POOL is None:
        _HELPER_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="agent-env-sync")
    return _HELPER_POOL


def _install_sandboxed_python_tool() -> None:
    try:
        from agent_env.tools import install_sandboxed_python_tool
    except ImportError:  # the tools package is optional while it is being built
        return
    install_sandboxed_python_tool()
