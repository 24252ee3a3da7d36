"""The EnvService HTTP server: sessions of registered envs, driven through their async API on one event loop.

    app = create_app(EnvService(env_ids=["agent_env/MathAgent-v0"], max_sessions=256, idle_timeout_s=600))
    serve(host="127.0.0.1", port=8080)              # what `agent-env serve` runs

Each session owns one env (`agent_env.make(env_id, **env_kwargs)`); its calls are serialised by a per-session
lock, while different sessions run side by side on the server's loop. A session not called for
`idle_timeout_s` is closed and released (a client that died leaks nothing). The routes and messages are listed in
`agent_env.service.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import inspect
import ipaddress
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from agent_env.registration import BUILTIN_ENVS, make, register_entry_point_envs
from agent_env.service.protocol import (
    PROTOCOL_MODELS,
    CreateSessionRequest,
    CreateSessionResponse,
    EnvListResponse,
    ErrorDetail,
    ErrorResponse,
    EvaluateRequest,
    HealthResponse,
    Observation,
    ReleaseResponse,
    ResetRequest,
    ResetResponse,
    StepRequest,
    StepResponse,
    TasksRequest,
    TasksResponse,
    TruncateRequest,
)
from agent_env.types import Task

__all__ = ["EnvService", "ServiceError", "create_app", "is_loopback", "serve"]

logger = logging.getLogger("agent_env.service")

DEFAULT_PORT = 8080
DEFAULT_MAX_SESSIONS = 1024
DEFAULT_IDLE_TIMEOUT_S = 600.0


class ServiceError(Exception):
    """A request the service refuses: `status` is the HTTP status, `kind` the error type the client sees."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass
class _Session:
    session_id: str
    env_id: str
    env: gym.Env
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0


class EnvService:
    """The sessions and their lifecycle, independent of HTTP (the FastAPI app in `create_app` is a thin shell).

    Args:
        env_ids: the env ids clients may create; None serves every agent_env id (built-ins and entry points).
        max_sessions: most sessions open at once; creating one more answers 503.
        idle_timeout_s: a session not called for this long is closed and released by the reaper.
    """

    def __init__(self, env_ids: Sequence[str] | None = None, max_sessions: int = DEFAULT_MAX_SESSIONS,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}.")
        if idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {idle_timeout_s}.")
        self._registered = sorted(set(BUILTIN_ENVS) | set(register_entry_point_envs()))
        if env_ids is not None:
            for env_id in env_ids:
                if env_id not in gym.registry:
                    make(env_id)  # raises NameNotFound with a "did you mean" hint
        self.env_ids = list(env_ids) if env_ids is not None else None
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.sessions: dict[str, _Session] = {}
        self._creating = 0
        self._build_lock = threading.Lock()
        self._task_cache: dict[str, Sequence[Task]] = {}

    # ------------------------------------------------------------------ envs

    def served_env_ids(self) -> list[str]:
        """The env ids clients may use: those given, else every agent_env env (built-in or from an entry point)."""
        return list(self.env_ids) if self.env_ids is not None else list(self._registered)

    def resolve_env_id(self, name: str) -> str:
        """An env id this server serves, from the id itself or its name without the namespace."""
        served = self.served_env_ids()
        if name in served:
            return name
        matches = [env_id for env_id in served if env_id.split("/", 1)[-1] == name]
        if len(matches) == 1:
            return matches[0]
        if name in gym.registry:
            raise ServiceError(403, "EnvNotServed", f"This server does not serve {name!r}; it serves {served}. Start it with `agent-env serve --env {name}`.")
        hint = difflib.get_close_matches(name, served, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ServiceError(404, "NameNotFound", f"No served env is called {name!r}.{suggestion} This server serves {served}.")

    async def _build_env(self, env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
        def build() -> gym.Env:
            with self._build_lock:  # env constructors install process-wide hooks; build one at a time
                return make(env_id, **env_kwargs)

        try:
            env = await asyncio.to_thread(build)
        except Exception as exc:
            refusal = _refusal(exc, f"Making {env_id} with {sorted(env_kwargs)} failed: ")
            if refusal is None:
                raise
            raise refusal from exc
        if not all(callable(getattr(env, name, None)) for name in ("areset", "astep", "atruncate", "aclose")):
            env.close()
            raise ServiceError(400, "TypeError", f"{env_id} has no async API (areset/astep/atruncate/aclose); the service serves agent_env envs (subclasses of AgentEnv).")
        return env

    # ------------------------------------------------------------------ sessions

    async def create(self, request: CreateSessionRequest) -> CreateSessionResponse:
        env_id = self.resolve_env_id(request.env_id)
        if len(self.sessions) + self._creating >= self.max_sessions:
            raise ServiceError(503, "TooManySessions", f"{len(self.sessions) + self._creating} sessions are open, the limit (--max-sessions {self.max_sessions}); release finished sessions (close() the client env) or raise the limit.")
        self._creating += 1  # counted while its env is built, so concurrent creates cannot overshoot the limit
        try:
            env = await self._build_env(env_id, request.env_kwargs)
        finally:
            self._creating -= 1
        session = _Session(session_id=uuid.uuid4().hex, env_id=env_id, env=env)
        self.sessions[session.session_id] = session
        return CreateSessionResponse(session_id=session.session_id, env_id=env_id, idle_timeout_s=self.idle_timeout_s)

    @contextlib.asynccontextmanager
    async def use(self, session_id: str) -> AsyncIterator[_Session]:
        """Hold a session for one call: it cannot be reaped meanwhile, and calls on it run one at a time."""
        session = self.sessions.get(session_id)
        if session is None:
            raise ServiceError(404, "SessionNotFound", f"No session {session_id!r}: it was released, or reaped after {self.idle_timeout_s:g} s without a call. Call reset() to start a new one.")
        session.busy += 1
        try:
            async with session.lock:
                try:
                    yield session
                except Exception as exc:
                    refusal = _refusal(exc)
                    if refusal is None:
                        raise
                    raise refusal from exc
        finally:
            session.busy -= 1
            session.last_used = time.monotonic()

    async def reset(self, session_id: str, request: ResetRequest) -> ResetResponse:
        options = request.options.model_dump(exclude_unset=True) if request.options is not None else None
        async with self.use(session_id) as session:
            obs, info = await session.env.areset(seed=request.seed, options=options)
        return ResetResponse(observation=Observation.model_validate(obs), info=info)

    async def step(self, session_id: str, request: StepRequest) -> StepResponse:
        action = request.action if isinstance(request.action, str) else request.action.model_dump(exclude_unset=True)
        async with self.use(session_id) as session:
            result = await session.env.astep(action)
        return _step_response(result)

    async def truncate(self, session_id: str, request: TruncateRequest) -> StepResponse:
        async with self.use(session_id) as session:
            result = await session.env.atruncate(request.reason)
        return _step_response(result)

    async def release(self, session_id: str) -> ReleaseResponse:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await _close_env(session)
        return ReleaseResponse(session_id=session_id, released=session is not None)

    async def reap_idle(self) -> list[str]:
        """Close and release every session idle for longer than `idle_timeout_s`; return their ids."""
        now = time.monotonic()
        idle = [s for s in self.sessions.values() if s.busy == 0 and now - s.last_used > self.idle_timeout_s]
        for session in idle:
            if self.sessions.pop(session.session_id, None) is not None:
                logger.info("reaped session %s (%s) after %.0f s idle", session.session_id, session.env_id, now - session.last_used)
                await _close_env(session)
        return [session.session_id for session in idle]

    async def reap_forever(self) -> None:
        """Run `reap_idle` every quarter of the idle timeout (at most every 5 s)."""
        interval = min(max(self.idle_timeout_s / 4, 0.05), 5.0)
        while True:
            await asyncio.sleep(interval)
            await self.reap_idle()

    async def close_all(self) -> None:
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(_close_env(session) for session in sessions))

    # ------------------------------------------------------------------ tasks and server-side evals

    async def tasks(self, request: TasksRequest) -> TasksResponse:
        env_id = self.resolve_env_id(request.env_type)
        tasks = await self._split_tasks(env_id, request.split, request.env_kwargs)
        end = len(tasks) if request.limit is None else min(len(tasks), request.offset + request.limit)
        page = [tasks[i] for i in range(request.offset, end)]
        return TasksResponse(env_id=env_id, split=request.split, total=len(tasks), offset=request.offset, tasks=page)

    async def _split_tasks(self, env_id: str, split: str, env_kwargs: dict[str, Any]) -> Sequence[Task]:
        key = f"{env_id}|{split}|{sorted(env_kwargs.items())!r}"
        if key not in self._task_cache:
            kwargs = dict(env_kwargs)
            if _factory_takes(env_id, "split"):
                kwargs["split"] = split
            env = await self._build_env(env_id, kwargs)
            try:
                tasks = env.unwrapped.tasks
            finally:
                env.close()
            if tasks is None:
                raise ServiceError(400, "ValueError", f"{env_id} has no task list (its `tasks` is None); pass tasks in its env_kwargs.")
            self._task_cache[key] = tasks
        return self._task_cache[key]

    async def evaluate(self, request: EvaluateRequest) -> Any:
        from agent_env.evaluation import OpenAIChatPolicy, aevaluate

        env_id = self.resolve_env_id(request.env_id)
        tasks = await self._split_tasks(env_id, request.split, request.env_kwargs)
        selected = [tasks[i] for i in range(min(len(tasks), request.num_tasks or len(tasks)))]
        built = [await self._build_env(env_id, request.env_kwargs) for _ in range(min(request.concurrency, len(selected) * request.k))]
        policy = OpenAIChatPolicy(request.endpoint, request.model, request.api_key, temperature=request.temperature,
                                  top_p=request.top_p, max_tokens=request.max_tokens)
        try:
            return await aevaluate(built.pop, policy, selected, request.k, len(built) or 1,
                                   metadata={"env_id": env_id, "split": request.split, "endpoint": request.endpoint, "model": policy.model})
        finally:
            await policy.aclose()


def _refusal(exc: Exception, prefix: str = "") -> ServiceError | None:
    """The `ServiceError` for an exception an env raises when it refuses a call (bad argument, call out of order);
    None for a `ServiceError` itself and for anything else (a bug: the server answers 500 and logs the traceback)."""
    if isinstance(exc, ServiceError):
        return None
    if isinstance(exc, gym.error.NameNotFound):
        return ServiceError(404, "NameNotFound", prefix + str(exc))
    for kind in type(exc).__mro__:
        if kind in _REFUSAL_STATUS:
            return ServiceError(_REFUSAL_STATUS[kind], kind.__name__, prefix + str(exc))
    return None


_REFUSAL_STATUS: dict[type[BaseException], int] = {ValueError: 400, TypeError: 400, KeyError: 400, ImportError: 400, RuntimeError: 409}
"""Exceptions by which an env refuses a call, and the status they answer; the client raises the same type."""


def _factory_takes(env_id: str, parameter: str) -> bool:
    entry_point = gym.spec(env_id).entry_point
    try:
        factory = gym.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
        return parameter in inspect.signature(factory).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


async def _close_env(session: _Session) -> None:
    try:
        await session.env.aclose()
        session.env.close()
    except Exception:  # noqa: BLE001 - a failing close must not stop the server or the reaper
        logger.exception("closing session %s (%s) failed", session.session_id, session.env_id)


def _step_response(result: tuple[Any, ...]) -> StepResponse:
    obs, reward, terminated, truncated, info = result
    return StepResponse(observation=Observation.model_validate(obs), reward=float(reward), terminated=bool(terminated),
                        truncated=bool(truncated), info=info)


# ---------------------------------------------------------------------- HTTP


def create_app(service: EnvService | None = None) -> Any:
    """The FastAPI app serving `service` (a default `EnvService` if None). Needs `fastapi`."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
    except ImportError as error:
        raise ImportError("The env service needs FastAPI and uvicorn: `pip install fastapi uvicorn` (or `uv add fastapi uvicorn`).") from error

    service = service if service is not None else EnvService()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(service.reap_forever(), name="agent-env session reaper")
        try:
            yield
        finally:
            reaper.cancel()
            await service.close_all()

    app = FastAPI(title="agent-env EnvService", lifespan=lifespan)
    app.state.service = service

    def error(status: int, kind: str, message: str) -> JSONResponse:
        return JSONResponse(ErrorResponse(error=ErrorDetail(type=kind, message=message)).model_dump(), status_code=status)

    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error(exc.status, exc.kind, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors())
        return error(422, "ValidationError", f"{request.method} {request.url.path}: {problems}. See GET /schema.")

    @app.exception_handler(Exception)
    async def on_exception(request: Request, exc: Exception) -> JSONResponse:
        refusal = _refusal(exc)
        if refusal is not None:
            return error(refusal.status, refusal.kind, str(refusal))
        logger.exception("%s %s failed", request.method, request.url.path)
        return error(500, "InternalError", f"{type(exc).__name__}: {exc}")

    @app.get("/health")
    async def health() -> HealthResponse:
        return HealthResponse(sessions=len(service.sessions), max_sessions=service.max_sessions, idle_timeout_s=service.idle_timeout_s)

    @app.get("/schema")
    async def schema() -> dict[str, Any]:
        return {name: model.model_json_schema() for name, model in PROTOCOL_MODELS.items()}

    @app.get("/envs")
    async def envs() -> EnvListResponse:
        return EnvListResponse(env_ids=service.served_env_ids())

    @app.post("/sessions")
    async def create(body: CreateSessionRequest) -> CreateSessionResponse:
        return await service.create(body)

    @app.post("/sessions/{session_id}/reset")
    async def reset(session_id: str, body: ResetRequest) -> ResetResponse:
        return await service.reset(session_id, body)

    @app.post("/sessions/{session_id}/step")
    async def step(session_id: str, body: StepRequest) -> StepResponse:
        return await service.step(session_id, body)

    @app.post("/sessions/{session_id}/truncate")
    async def truncate(session_id: str, body: TruncateRequest) -> StepResponse:
        return await service.truncate(session_id, body)

    @app.delete("/sessions/{session_id}")
    async def release(session_id: str) -> ReleaseResponse:
        return await service.release(session_id)

    @app.post("/tasks")
    async def tasks(body: TasksRequest) -> TasksResponse:
        return await service.tasks(body)

    @app.post("/evaluate")
    async def evaluate(body: EvaluateRequest) -> dict[str, Any]:
        report = await service.evaluate(body)
        return report.model_dump(mode="json")

    return app


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (`127.0.0.0/8`, `::1`, `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, env_ids: Sequence[str] | None = None,
          max_sessions: int = DEFAULT_MAX_SESSIONS, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S, log_level: str = "info") -> None:
    """Run the service until interrupted (what `agent-env serve` does). Binding a non-loopback address logs a
    loud warning: anyone who can reach it can run the served envs' workflows, which execute code."""
    try:
        import uvicorn
    except ImportError as error:
        raise ImportError("`agent-env serve` needs uvicorn: `pip install uvicorn fastapi`.") from error
    if not is_loopback(host):
        logger.warning(
            "\n%s\nEnvService is binding %s: every machine that can reach port %d can create sessions and run the "
            "served envs' workflows and tools on this host, with no authentication. Bind 127.0.0.1 (the default) "
            "and tunnel (ssh -L) unless this network is trusted.\n%s", "!" * 78, host, port, "!" * 78)
    service = EnvService(env_ids, max_sessions=max_sessions, idle_timeout_s=idle_timeout_s)
    logger.info("EnvService: serving %s at http://%s:%d (at most %d sessions, released after %g s idle; schema at /schema)",
                ", ".join(service.served_env_ids()), host, port, max_sessions, idle_timeout_s)
    app = create_app(service)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
