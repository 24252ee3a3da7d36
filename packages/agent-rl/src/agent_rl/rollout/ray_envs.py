"""Env episodes in Ray actors: `RayEnvPool` (the actors, placement, loss handling) and `RayAgentEnv` (its client).

    pool = RayEnvPool(functools.partial(agent_env.make, "agent_env/MathAgent-v0"), num_actors=4).start()
    collector = RolloutCollector(pool.env, engine, tokenizer, sampling)    # the engine stays in this process

Each `EnvHost` actor hosts many episodes on its own event loop (workflow, tools and judge all run there); the
driver sends completions and gets observations back, nothing else. Actors are spread over the cluster's nodes.
An actor that dies (or a node that goes) loses its episodes: their next call raises `EnvLost`, the pool
replaces the actor, and the collector plays those episodes again from the start on a live actor. Every call
has a timeout, so no step waits forever on a lost actor. Ray is imported only when a pool starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, SupportsFloat

import gymnasium as gym
from agent_env.background_loop import SyncFromAsync
from agent_env.messages import render_conversation
from agent_env.spaces import CompletionSpace, ConversationSpace
from agent_env.termination import TerminationReason

from agent_rl.rollout.collector import EnvLost
from agent_rl.rollout.ray_host import ConfigEnvFactory, EnvHost, connect

if TYPE_CHECKING:
    from agent_env.config import AgentRLConfig
    from agent_env.env import AgentEnv

__all__ = ["ConfigEnvFactory", "EnvHost", "RayAgentEnv", "RayEnvPool", "connect"]

Observation = dict[str, Any]
Action = str | dict[str, Any]
StepResult = tuple[Observation, SupportsFloat, bool, bool, dict[str, Any]]
Placement = Literal["least_loaded", "round_robin"]

DEFAULT_STEP_TIMEOUT_S = 780.0
"""Default wait for one env call: `AgentEnv`'s default episode timeout (600 s) plus the judge's time and a margin."""
START_TIMEOUT_S = 300.0
"""Most seconds `RayEnvPool.start` waits for its actors to come up (imports, first env built)."""
PING_TIMEOUT_S = 30.0
"""How long an actor that let a call time out gets to answer a ping before it is replaced."""
CLOSE_TIMEOUT_S = 10.0
"""Most seconds `aclose` waits for an actor to release an episode (a dead actor has released it already)."""


@dataclass(eq=False)
class _Slot:
    """One actor of the pool and the episodes placed on it."""

    index: int
    actor: Any
    episodes: int = 0
    alive: bool = True
    ready: bool = False
    """The actor has come up (a new one takes seconds: imports, first env built)."""

    def __str__(self) -> str:
        return f"env actor #{self.index}"


class RayEnvPool:
    """`EnvHost` actors on a Ray cluster, spread over its nodes, and the episodes placed on them.

    `env_factory` is a zero-argument callable returning a fresh `AgentEnv`; Ray pickles it (cloudpickle) to every
    actor, so it must not hold unpicklable state: e.g. `functools.partial(agent_env.make, env_id, **kwargs)` or
    `ConfigEnvFactory(config)`. `start()` connects (`connect(address, **ray_init_kwargs)`) and starts
    `num_actors` actors (0: as many as the cluster's CPUs allow at `num_cpus_per_actor` each), waiting until
    each has built one env. `env()` returns a new `RayAgentEnv`: pass `pool.env` as a collector's `env_factory`.
    Each `reset` places its episode on a live actor (`least_loaded` or `round_robin`), one that has come up
    rather than a replacement still starting.

    Losses: a call that finds its actor dead replaces the actor (counted in `replaced_actors`); a call without
    an answer within `step_timeout_s` has its actor pinged, and replaced if the ping fails too. Either way the
    call raises `EnvLost`. `close()` kills the actors (they also end with this process).
    """

    def __init__(self, env_factory: Callable[[], AgentEnv], *, num_actors: int = 0, num_cpus_per_actor: float = 1.0,
                 placement: Placement = "least_loaded", step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
                 runtime_env: dict[str, Any] | None = None, address: str | None = None,
                 ray_init_kwargs: dict[str, Any] | None = None) -> None:
        if placement not in ("least_loaded", "round_robin"):
            raise ValueError(f"placement must be 'least_loaded' or 'round_robin', got {placement!r}.")
        if num_actors < 0 or num_cpus_per_actor <= 0 or step_timeout_s <= 0:
            raise ValueError("num_actors must be >= 0, num_cpus_per_actor and step_timeout_s > 0; got "
                             f"{num_actors}, {num_cpus_per_actor}, {step_timeout_s}.")
        self.env_factory = env_factory
        self.num_actors = num_actors
        self.num_cpus_per_actor = num_cpus_per_actor
        self.placement = placement
        self.step_timeout_s = step_timeout_s
        self.runtime_env = dict(runtime_env or {})
        self.address = address
        self.ray_init_kwargs = dict(ray_init_kwargs or {})
        self.replaced_actors = 0
        self._slots: list[_Slot] = []
        self._cursor = 0
        self._actor_class: Any = None

    @classmethod
    def from_config(cls, config: AgentRLConfig) -> RayEnvPool:
        """The pool `ajet.rollout.ray` describes, making the envs `ajet.rollout` describes."""
        rollout = config.ajet.rollout
        ray_config = rollout.ray
        timeout = ray_config.step_timeout_s or rollout.episode_timeout_s + 180.0
        return cls(ConfigEnvFactory(config), num_actors=ray_config.num_actors, num_cpus_per_actor=ray_config.num_cpus_per_actor,
                   placement=ray_config.placement, step_timeout_s=timeout, runtime_env=ray_config.runtime_env,
                   address=ray_config.address)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RayEnvPool:
        """Connect and start the actors (once); returns the pool. Raises `TimeoutError` naming the fix when the
        cluster cannot host them, and the actor's own error when building an env fails there."""
        if self._slots:
            return self
        connect(self.address, **self.ray_init_kwargs)
        import ray

        count = self.num_actors or max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus_per_actor))
        self._actor_class = ray.remote(EnvHost).options(
            num_cpus=self.num_cpus_per_actor, scheduling_strategy="SPREAD", max_restarts=0,
            runtime_env=self.runtime_env or None)
        self._slots = [self._new_slot(index) for index in range(count)]
        try:
            self.wait_until_ready(START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as error:
            cpus = ray.cluster_resources().get("CPU", 0)
            self.close()
            raise TimeoutError(
                f"{count} env actors of {self.num_cpus_per_actor} CPU each did not start within {START_TIMEOUT_S:.0f} s; "
                f"the cluster has {cpus:g} CPUs. Lower ajet.rollout.ray.num_actors or num_cpus_per_actor, or add nodes.") from error
        except Exception:
            self.close()
            raise
        return self

    def wait_until_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until every live actor has come up (replacements included); raises Ray's `GetTimeoutError`
        after `timeout_s`, and an actor's own error when building an env failed there."""
        import ray

        live = [slot for slot in self._slots if slot.alive]
        ray.get([slot.actor.ready.remote() for slot in live], timeout=timeout_s)
        for slot in live:
            slot.ready = True

    def close(self) -> None:
        """Kill the actors. Safe to call twice; `start()` starts new ones."""
        if self._slots:
            import ray

            for slot in self._slots:
                slot.alive = False
                with contextlib.suppress(Exception):
                    ray.kill(slot.actor, no_restart=True)
        self._slots = []

    def __enter__(self) -> RayEnvPool:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ episodes

    def env(self) -> RayAgentEnv:
        """A new env client on this pool (starting the pool on first use)."""
        return RayAgentEnv(self.start())

    @property
    def actors(self) -> list[Any]:
        """The live actors' handles, in slot order."""
        return [slot.actor for slot in self._slots if slot.alive]

    @property
    def open_episodes(self) -> list[int]:
        """Episodes open on each live actor (as this driver placed them), in the order of `actors`."""
        return [slot.episodes for slot in self._slots if slot.alive]

    def place(self) -> _Slot:
        """The slot for a new episode, its episode count taken."""
        if not self._slots:
            raise RuntimeError("The pool has no actors; call start() first (or it was closed).")
        n = len(self._slots)
        order = [self._slots[(self._cursor + i) % n] for i in range(n)]
        live = [slot for slot in order if slot.alive and slot.ready] or [slot for slot in order if slot.alive]
        if not live:
            raise EnvLost("Every env actor of the pool is dead and none could be replaced.")
        slot = min(live, key=lambda s: s.episodes) if self.placement == "least_loaded" else live[0]
        self._cursor = (slot.index + 1) % n
        slot.episodes += 1
        return slot

    def release(self, slot: _Slot) -> None:
        slot.episodes = max(0, slot.episodes - 1)

    def report_dead(self, slot: _Slot) -> None:
        """`slot`'s actor is gone: kill what is left of it and put a new actor in its place (once)."""
        if not slot.alive or slot.index >= len(self._slots) or self._slots[slot.index] is not slot:
            return
        import ray

        slot.alive = False
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
        self._slots[slot.index] = self._new_slot(slot.index)
        self.replaced_actors += 1

    async def report_unresponsive(self, slot: _Slot) -> None:
        """A call to `slot`'s actor timed out: ping it, and replace it when the ping fails too."""
        if not slot.alive:
            return
        import ray

        try:
            await asyncio.wait_for(_as_future(slot.actor.ready.remote()), min(PING_TIMEOUT_S, self.step_timeout_s))
        except (TimeoutError, ray.exceptions.RayError):
            self.report_dead(slot)

    def _new_slot(self, index: int) -> _Slot:
        slot = _Slot(index, self._actor_class.remote(self.env_factory))

        def mark_ready(answer: Any) -> None:  # runs on a Ray thread: a plain flag, no loop calls
            slot.ready = answer.exception() is None

        slot.actor.ready.remote().future().add_done_callback(mark_ready)
        return slot


class RayAgentEnv(SyncFromAsync, gym.Env[Observation, Action]):
    """An env whose episode runs in an actor of a `RayEnvPool`, with `AgentEnv`'s contract.

    Same methods, arguments and returns as `AgentEnv`: `reset(seed=None, options=None)`, `step(action)`,
    `truncate(reason)`, `close()` and the async twins `areset`, `astep`, `atruncate`, `aclose` (the sync ones run
    on a background loop, so they work inside a running loop too). An exception the env raises in the actor is
    raised here as its own type. A call whose actor died, or that got no answer within the pool's
    `step_timeout_s`, raises `EnvLost`: the episode is gone; `reset` starts a new one on a live actor.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, pool: RayEnvPool, render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use one of {self.metadata['render_modes']} or None.")
        self.pool = pool
        self.render_mode = render_mode
        self.observation_space = ConversationSpace()
        self.action_space = CompletionSpace()
        self._slot: _Slot | None = None
        self._key = ""
        self._last_obs: Observation | None = None

    # ------------------------------------------------------------------ async API

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Observation, dict[str, Any]]:
        gym.Env.reset(self, seed=seed)  # seeds np_random (super() would be the sync twin)
        await self.aclose()
        self._slot, self._key = self.pool.place(), uuid.uuid4().hex
        obs, info = await self._call("reset", seed, options)
        self._last_obs = obs
        return obs, info

    async def astep(self, action: Action) -> StepResult:
        if not isinstance(action, (str, dict)):
            raise TypeError(f"An action is the completion text (str) or an assistant message dict; got {type(action).__name__}.")
        return self._result(await self._call("step", action))

    async def atruncate(self, reason: TerminationReason | str) -> StepResult:
        return self._result(await self._call("truncate", TerminationReason(reason).value))

    async def aclose(self) -> None:
        """Release the episode in its actor (a dead actor has released it already). Safe to call twice."""
        slot, key = self._slot, self._key
        self._slot, self._key = None, ""
        if slot is None:
            return
        self.pool.release(slot)
        if slot.alive:
            with contextlib.suppress(Exception):  # best effort: the episode is over for us either way
                await asyncio.wait_for(_as_future(slot.actor.close.remote(key)), CLOSE_TIMEOUT_S)

    # ------------------------------------------------------------------ sync API

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return render_conversation(self._last_obs["messages"] if self._last_obs else [])

    def __repr__(self) -> str:
        return f"RayAgentEnv({self._slot or 'no episode'})"

    # ------------------------------------------------------------------ plumbing

    async def _call(self, method: str, *args: Any) -> Any:
        import ray

        slot = self._slot
        if slot is None:
            raise RuntimeError(f"{method}() was called without a running episode; call reset() first.")
        ref = getattr(slot.actor, method).remote(self._key, *args)
        try:
            return await asyncio.wait_for(_as_future(ref), self.pool.step_timeout_s)
        except ray.exceptions.RayTaskError:  # the env raised; Ray raises it as an instance of its own type too
            raise
        except TimeoutError as error:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
            await self.pool.report_unresponsive(slot)
            raise EnvLost(f"{slot} gave no answer to {method}() within {self.pool.step_timeout_s:g} s "
                          "(ajet.rollout.ray.step_timeout_s); the episode is lost.") from error
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError, ray.exceptions.NodeDiedError) as error:
            if isinstance(error, ray.exceptions.ActorUnavailableError):
                await self.pool.report_unresponsive(slot)
            else:
                self.pool.report_dead(slot)
            raise EnvLost(f"{slot} died during {method}() ({type(error).__name__}); the episode is lost.") from error

    def _result(self, result: StepResult) -> StepResult:
        self._last_obs = result[0]
        return result


def _as_future(ref: Any) -> asyncio.Future[Any]:
    """An object ref as a future of the running loop (so `wait_for` can time it out and cancel our wait)."""
    return asyncio.wrap_future(ref.future())


