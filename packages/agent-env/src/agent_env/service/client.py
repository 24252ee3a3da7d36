"""`RemoteAgentEnv`: a Gymnasium env whose episodes run in an EnvService; `EnvServiceTasks`: a service's task list.

A remote env is used exactly like a local one: the same `reset`/`step`/`truncate`/`close` signatures and
returns, the same async twins, the same exceptions for refused calls (`ValueError`, `RuntimeError`, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Iterator, Sequence
from typing import Any, SupportsFloat, overload

import gymnasium as gym
import httpx

from agent_env.background_loop import SyncFromAsync
from agent_env.messages import render_conversation
from agent_env.service.protocol import (
    CreateSessionRequest,
    CreateSessionResponse,
    ResetOptions,
    ResetRequest,
    ResetResponse,
    StepRequest,
    StepResponse,
    TasksRequest,
    TasksResponse,
    TruncateRequest,
)
from agent_env.spaces import CompletionSpace, ConversationSpace
from agent_env.termination import TerminationReason
from agent_env.types import Task

__all__ = ["EnvServiceError", "EnvServiceTasks", "RemoteAgentEnv", "SessionNotFoundError"]

Observation = dict[str, Any]
Action = str | dict[str, Any]
StepResult = tuple[Observation, SupportsFloat, bool, bool, dict[str, Any]]

DEFAULT_TIMEOUT_S = 900.0
"""Per-request timeout. A step runs the workflow (tools included) to its next model call, so it can take long."""


class EnvServiceError(RuntimeError):
    """The service failed or could not be reached; `status` is the HTTP status (0 when there was no answer)."""

    def __init__(self, message: str, status: int = 0, kind: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class SessionNotFoundError(EnvServiceError):
    """The server no longer has this env's session (released, reaped after its idle timeout, or restarted)."""


_REMOTE_EXCEPTIONS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "ValidationError": ValueError,
    "TypeError": TypeError,
    "KeyError": KeyError,
    "ImportError": ImportError,
    "RuntimeError": RuntimeError,
    "NameNotFound": gym.error.NameNotFound,
}
"""Error types the server reports, raised here as the same exception a local env raises."""


def _raise_for_error(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    try:
        detail = response.json()["error"]
        kind, message = detail["type"], detail["message"]
    except (ValueError, KeyError, TypeError):
        kind, message = "", response.text[:500]
    if kind == "SessionNotFound":
        raise SessionNotFoundError(message, response.status_code, kind)
    if kind in _REMOTE_EXCEPTIONS:
        raise _REMOTE_EXCEPTIONS[kind](message)
    raise EnvServiceError(f"{what} failed with HTTP {response.status_code} ({kind or 'no error body'}): {message}", response.status_code, kind)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client: building it loads the CA bundle (~30 ms), which a thousand envs
    should not each pay."""
    return httpx.create_ssl_context()


class RemoteAgentEnv(SyncFromAsync, gym.Env[Observation, Action]):
    """An env served by an EnvService (`agent-env serve`), with `AgentEnv`'s contract.

    `RemoteAgentEnv(base_url, env_id, **env_kwargs)` mirrors `agent_env.make(env_id, **env_kwargs)` (the kwargs
    must be JSON-able: workflows and judges as `"module:Class"` references). The server session is created by the
    first `reset`/`areset` and released by `close`/`aclose`; a `reset` after the server reaped an idle session
    opens a new one, a `step` raises `SessionNotFoundError` (a `RuntimeError`: call reset()).

    Methods: `reset(seed=None, options=None)`, `step(action)`, `truncate(reason)`, `close()`, and the async twins
    `areset`, `astep`, `atruncate`, `aclose` (httpx.AsyncClient on the caller's loop). Sync methods run on a shared
    background loop, so they work inside a running event loop too. Unlike a local env, an episode started with
    `reset()` may go on with `astep()`: the episode lives on the server.

    Attributes: `base_url`, `env_id`, `env_kwargs`, `session_id` (None until the first reset).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, base_url: str, env_id: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, render_mode: str | None = None,
                 **env_kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use one of {self.metadata['render_modes']} or None.")
        self.base_url = base_url.rstrip("/")
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs)
        self.timeout_s = timeout_s
        self.render_mode = render_mode
        self.session_id: str | None = None
        self.observation_space = ConversationSpace()
        self.action_space = CompletionSpace()
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._last_obs: Observation | None = None

    # ------------------------------------------------------------------ async API

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict[str, Any]]:
        gym.Env.reset(self, seed=seed)  # seeds np_random (super() would be the sync twin)
        request = ResetRequest(seed=seed, options=_reset_options(options))
        if self.session_id is None:
            await self._create_session()
        try:
            response = await self._post("reset", request, ResetResponse)
        except SessionNotFoundError:
            await self._create_session()
            response = await self._post("reset", request, ResetResponse)
        obs = _observation(response.observation.model_dump())
        self._last_obs = obs
        return obs, response.info

    async def astep(self, action: Action) -> StepResult:
        if not isinstance(action, (str, dict)):
            raise TypeError(f"An action is the completion text (str) or an assistant message dict; got {type(action).__name__}.")
        return await self._step_call("step", StepRequest.model_validate({"action": action}))

    async def atruncate(self, reason: TerminationReason | str) -> StepResult:
        return await self._step_call("truncate", TruncateRequest(reason=TerminationReason(reason).value))

    async def aclose(self) -> None:
        """Release the server session and close this loop's HTTP client. Safe to call twice."""
        session_id, self.session_id = self.session_id, None
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if session_id is not None:
            client = client or self._new_client()
            with contextlib.suppress(httpx.HTTPError):  # a server that is gone reaps (or lost) the session itself
                await client.delete(f"/sessions/{session_id}")
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------------ sync API

    def close(self) -> None:
        """Release the server session (and the sync API's HTTP client). Safe to call twice."""
        SyncFromAsync.close(self)
        self._clients = {loop: client for loop, client in self._clients.items() if not loop.is_closed()}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return render_conversation(self._last_obs["messages"] if self._last_obs else [])

    def __repr__(self) -> str:
        return f"RemoteAgentEnv({self.base_url!r}, {self.env_id!r}, session_id={self.session_id!r})"

    # ------------------------------------------------------------------ plumbing

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s, verify=_ssl_context())

    def _client(self) -> httpx.AsyncClient:
        """This loop's HTTP client (an httpx.AsyncClient belongs to the loop it was first used on)."""
        loop = asyncio.get_running_loop()
        for stale in [other for other in self._clients if other.is_closed()]:
            del self._clients[stale]
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = self._new_client()
        return client

    async def _create_session(self) -> None:
        request = CreateSessionRequest(env_id=self.env_id, env_kwargs=self.env_kwargs)
        response = await self._request("POST", "/sessions", request, CreateSessionResponse, "creating a session")
        self.session_id = response.session_id

    async def _post(self, verb: str, request: Any, response_model: type[Any]) -> Any:
        if self.session_id is None:
            raise RuntimeError(f"{verb}() was called without a running episode; call reset() first.")
        return await self._request("POST", f"/sessions/{self.session_id}/{verb}", request, response_model, f"{verb}()")

    async def _step_call(self, verb: str, request: Any) -> StepResult:
        response: StepResponse = await self._post(verb, request, StepResponse)
        obs = _observation(response.observation.model_dump())
        self._last_obs = obs
        return obs, response.reward, response.terminated, response.truncated, response.info

    async def _request(self, method: str, path: str, body: Any, response_model: type[Any], what: str) -> Any:
        try:
            response = await self._client().request(method, path, json=body.model_dump(mode="json", exclude_unset=True))
        except httpx.HTTPError as error:
            raise EnvServiceError(f"{what}: could not reach the env service at {self.base_url} ({type(error).__name__}: {error}). Is `agent-env serve` running there?") from error
        _raise_for_error(response, f"{what} on {self.base_url}")
        return response_model.model_validate(response.json())


def _reset_options(options: dict[str, Any] | None) -> ResetOptions | None:
    if options is None:
        return None
    options = dict(options)
    task = options.get("task")
    if isinstance(task, Task):
        options["task"] = task.model_dump()
    unknown = sorted(set(options) - set(ResetOptions.model_fields))
    if unknown:
        raise ValueError(f"Unknown reset options {unknown}; accepted: 'task', 'episode_id', 'repeat_index'.")
    return ResetOptions.model_validate(options)


def _observation(data: dict[str, Any]) -> Observation:
    obs = {"messages": data["messages"], "tools": data["tools"], "call_id": data["call_id"]}
    for key in ("tool_choice", "response_format"):
        if data.get(key) is not None:
            obs[key] = data[key]
    return obs


class EnvServiceTasks(Sequence[Task]):
    """The task list of one split of an env served by an EnvService: the YAML's `env_service` task reader.

    `EnvServiceTasks(env_url, env_type, split)` asks `POST {env_url}/tasks` for pages of `page_size` tasks on
    first use and caches them (reads are synchronous; the list is fixed for the service's lifetime).
    `env_type` is a served env id or its name without the namespace (`MathAgent-v0`).
    """

    def __init__(self, env_url: str, env_type: str, split: str = "train", *, env_kwargs: dict[str, Any] | None = None,
                 page_size: int = 1000, timeout_s: float = 60.0) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}.")
        self.env_url = env_url.rstrip("/")
        self.env_type = env_type
        self.split = split
        self.env_kwargs = dict(env_kwargs or {})
        self.page_size = page_size
        self.timeout_s = timeout_s
        self._total: int | None = None
        self._pages: dict[int, list[Task]] = {}

    def _fetch(self, page: int) -> list[Task]:
        if page not in self._pages:
            request = TasksRequest(env_type=self.env_type, split=self.split, env_kwargs=self.env_kwargs,
                                   offset=page * self.page_size, limit=self.page_size)
            try:
                response = httpx.post(f"{self.env_url}/tasks", json=request.model_dump(mode="json"), timeout=self.timeout_s,
                                      verify=_ssl_context())
            except httpx.HTTPError as error:
                raise EnvServiceError(f"Fetching tasks of {self.env_type!r} ({self.split}) from {self.env_url} failed ({type(error).__name__}: {error}). Is `agent-env serve` running there? (ajet.task_reader.env_service.env_url)") from error
            _raise_for_error(response, f"fetching tasks of {self.env_type!r} ({self.split}) from {self.env_url}")
            result = TasksResponse.model_validate(response.json())
            self._total = result.total
            self._pages[page] = result.tasks
        return self._pages[page]

    def __len__(self) -> int:
        if self._total is None:
            self._fetch(0)
        assert self._total is not None
        return self._total

    @overload
    def __getitem__(self, index: int) -> Task: ...
    @overload
    def __getitem__(self, index: slice) -> list[Task]: ...
    def __getitem__(self, index: int | slice) -> Task | list[Task]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        total = len(self)
        if index < 0:
            index += total
        if not 0 <= index < total:
            raise IndexError(f"task index {index} out of range for {total} tasks of {self.env_type!r} ({self.split})")
        return self._fetch(index // self.page_size)[index % self.page_size]

    def __iter__(self) -> Iterator[Task]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"EnvServiceTasks({self.env_url!r}, {self.env_type!r}, split={self.split!r})"
