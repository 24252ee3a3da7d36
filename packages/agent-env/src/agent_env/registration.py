"""Env ids: the built-in ones, and third-party envs found through the `agent_env.envs` entry-point group.

Ids follow Gymnasium's `namespace/Name-vN`. Entry points are stored as `"module:function"` strings, so nothing
is imported until an env is made. A third-party package declares, in its `pyproject.toml`::

    [project.entry-points."agent_env.envs"]
    "my_pkg/MyAgent-v0" = "my_pkg.envs:make_my_agent_env"

and `agent_env.make("my_pkg/MyAgent-v0")` finds it (the entry points are read on the first lookup of an id
that is not registered yet, never at import).
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym

ENTRY_POINT_GROUP = "agent_env.envs"

BUILTIN_ENVS: dict[str, str] = {
    "agent_env/MathAgent-v0": "agent_env.envs.math_agent:make_math_agent_env",
    "agent_env/Completion-v0": "agent_env.envs.completion:make_completion_env",
    "agent_env/Workflow-v0": "agent_env.envs.workflow_env:make_workflow_env",
}

_entry_points_loaded = False


def register_builtin_envs() -> None:
    """Register the built-in ids with Gymnasium (idempotent; stores strings only)."""
    for env_id, entry_point in BUILTIN_ENVS.items():
        _register(env_id, entry_point)


def register_entry_point_envs() -> list[str]:
    """Register every env that installed packages declare in the `agent_env.envs` group; returns their ids."""
    global _entry_points_loaded
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        _register(entry.name, entry.value)
        found.append(entry.name)
    _entry_points_loaded = True
    return found


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """`gymnasium.make` that also finds third-party envs and returns the env itself (not wrapped), so its async
    methods (`areset`, `astep`) are at hand. `max_episode_steps` becomes the env's own turn limit."""
    if env_id not in gym.registry and not _entry_points_loaded:
        register_entry_point_envs()
    if env_id not in gym.registry:
        known = [name for name in gym.registry if "/" in name]
        hint = difflib.get_close_matches(env_id, known, n=1)
        raise gym.error.NameNotFound(
            f"No env registered as {env_id!r}."
            + (f" Did you mean {hint[0]!r}?" if hint else "")
            + f" Installed packages add envs through the {ENTRY_POINT_GROUP!r} entry-point group."
        )
    max_episode_steps = kwargs.pop("max_episode_steps", None)
    if max_episode_steps is not None:
        kwargs["max_turns"] = max_episode_steps
    return gym.make(env_id, **kwargs).unwrapped


def _register(env_id: str, entry_point: str) -> None:
    if env_id in gym.registry:
        return
    # The env checks its own contract (agent_env.check_env) and enforces its own order (reset before step);
    # without Gymnasium's passive wrappers `gymnasium.make` returns the AgentEnv itself, async methods included.
    gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True, order_enforce=False)
