"""What runs on the Ray side of `RayEnvPool`: joining the cluster (`connect`) and the `EnvHost` actor."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, SupportsFloat

if TYPE_CHECKING:
    from agent_env.config import AgentRLConfig
    from agent_env.env import AgentEnv

__all__ = ["ConfigEnvFactory", "EnvHost", "connect"]

Observation = dict[str, Any]
Action = str | dict[str, Any]
StepResult = tuple[Observation, SupportsFloat, bool, bool, dict[str, Any]]


def connect(address: str | None = None, **init_kwargs: Any) -> None:
    """Join the Ray cluster at `address`, or start a local one; nothing if this process is connected already.

    `address`: `auto` (the cluster `ray start` runs on this machine; an error if none), `host:port`, `local` (a
    new local cluster) or None (a running cluster if one is found, else a new local one). `init_kwargs` go to
    `ray.init` (e.g. `num_cpus`, `include_dashboard`). Workers run each node's own Python environment (that of
    `ray start`, or this interpreter for a local cluster): Ray's `uv run` hook, which would upload the current
    directory and build a fresh environment for the job on every node, is off unless the environment variable
    `RAY_ENABLE_UV_RUN_RUNTIME_ENV` says otherwise.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return
    try:
        with _uv_run_hook_off():
            ray.init(address=address, **init_kwargs)
    except ConnectionError as error:
        raise ConnectionError(
            f"No Ray cluster at address={address!r} ({error}). Start one with `ray start --head` (and "
            "`ray start --address=HEAD:6379` on the other nodes), or set ajet.rollout.ray.address to null to start "
            "a local cluster in this process.") from error


@contextlib.contextmanager
def _uv_run_hook_off() -> Iterator[None]:
    """Turn off Ray's `uv run` hook for one `ray.init`, unless the user chose with `RAY_ENABLE_UV_RUN_RUNTIME_ENV`.

    Ray reads that variable once, when `ray` is first imported, and agentscope imports `ray` whenever it is
    installed; so the value Ray read is overridden here, for the duration of the call only.
    """
    from ray._private import ray_constants

    if "RAY_ENABLE_UV_RUN_RUNTIME_ENV" in os.environ or not hasattr(ray_constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV"):
        yield
        return
    previous = ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV
    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False
    try:
        yield
    finally:
        ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = previous


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as error:
        raise ImportError("Episodes on Ray need the `ray` package: install the extra with `uv sync --extra ray` "
                          "(or `pip install 'agent-rl[ray]'`), or turn off ajet.rollout.ray.") from error
    return ray


class ConfigEnvFactory:
    """The envs a config describes (`agent_env.from_config.env_factory_from_config(config, **overrides)`), as a
    picklable zero-argument factory: each process resolves the workflow and judge references on its first call."""

    def __init__(self, config: AgentRLConfig, **overrides: Any) -> None:
        self.config = config
        self.overrides = overrides
        self._factory: Callable[[], AgentEnv] | None = None

    def __call__(self) -> AgentEnv:
        if self._factory is None:
            from agent_env.from_config import env_factory_from_config

            self._factory = env_factory_from_config(self.config, **self.overrides)
        return self._factory()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "overrides": self.overrides}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], **state["overrides"])


class EnvHost:
    """The Ray actor: many episodes, each a fresh env from `env_factory`, keyed by the client's episode key.

    Its methods are the env's async API with the key first; they run concurrently on the actor's event loop.
    """

    def __init__(self, env_factory: Callable[[], AgentEnv]) -> None:
        self._factory = env_factory
        self._envs: dict[str, AgentEnv] = {}
        self._served = 0
        self._factory().close()  # imports and reference resolution happen now, so `ready` means ready

    def ready(self) -> dict[str, Any]:
        """Where this actor runs, the episodes it holds now and those it was given so far."""
        import ray

        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "episodes": len(self._envs),
                "served": self._served}

    async def reset(self, key: str, seed: int | None, options: dict[str, Any] | None) -> tuple[Observation, dict[str, Any]]:
        env = self._envs.get(key)
        if env is None:
            env = self._envs[key] = self._factory()
            self._served += 1
        return await env.areset(seed=seed, options=options)

    async def step(self, key: str, action: Action) -> StepResult:
        obs, reward, terminated, truncated, info = await self._env(key, "step").astep(action)
        return obs, float(reward), terminated, truncated, info

    async def truncate(self, key: str, reason: str) -> StepResult:
        obs, reward, terminated, truncated, info = await self._env(key, "truncate").atruncate(reason)
        return obs, float(reward), terminated, truncated, info

    async def close(self, key: str) -> None:
        env = self._envs.pop(key, None)
        if env is not None:
            await env.aclose()

    def _env(self, key: str, call: str) -> AgentEnv:
        env = self._envs.get(key)
        if env is None:
            raise RuntimeError(f"{call}() was called without a running episode; call reset() first.")
        return env
