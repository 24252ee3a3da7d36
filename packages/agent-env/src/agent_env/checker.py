"""`check_env`: agent-env's contract beyond Gymnasium's, as a chain of small checks with messages that say what to fix."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agent_env.termination import TerminationReason

STEP_INFO_KEYS = ("task_id", "episode_id", "turn", "tool_call_errors", "pending_calls")
FINAL_INFO_KEYS = ("termination_reason", "is_success", "reward_components", "log_metrics", "final_reward")


class EnvContractError(AssertionError):
    """An env breaks agent-env's contract; the message names the call and the likely fix."""


def check_env(env: gym.Env, seed: int = 0, final_action: str = "I am done.", max_steps: int = 64) -> None:
    """Run every check on `env` (an `AgentEnv` or a wrapper of one); raise `EnvContractError` on the first failure.

    `final_action` is a completion that should end a typical episode (no tool call); the checks also step
    with it to reach the end of an episode.
    """
    env = env.unwrapped
    check_has_async_twins(env)
    obs, info = check_reset(env, seed)
    check_observation(obs, "reset()")
    check_tool_schemas(obs)
    check_step_info(info, "reset()")
    check_reset_determinism(env, seed)
    check_episode_end(env, seed, final_action, max_steps)
    check_close_twice(env)


def check_has_async_twins(env: gym.Env) -> None:
    for name in ("areset", "astep", "atruncate", "aclose"):
        if not callable(getattr(env, name, None)):
            raise EnvContractError(f"The env has no async method `{name}`; derive it from agent_env.AgentEnv (which provides it).")


def check_reset(env: gym.Env, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    result = env.reset(seed=seed)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise EnvContractError(f"reset() must return (obs, info); got {type(result).__name__}.")
    obs, info = result
    if info.get("turn") != 0:
        raise EnvContractError(f"reset() must return info['turn'] == 0, got {info.get('turn')!r}.")
    return obs, info


def check_observation(obs: Any, call: str) -> None:
    if not isinstance(obs, dict) or not {"messages", "tools", "call_id"} <= set(obs):
        raise EnvContractError(f"{call} must return an observation dict with keys 'messages', 'tools', 'call_id'; got {obs!r:.200}.")
    for index, message in enumerate(obs["messages"]):
        if not isinstance(message, dict) or "role" not in message or not isinstance(message.get("content"), str):
            raise EnvContractError(
                f"{call}: observation message {index} must be an OpenAI chat message with 'role' and a string 'content' "
                f"(normalise list contents with agent_env.messages.normalize_messages); got {message!r:.200}."
            )


def check_tool_schemas(obs: dict[str, Any]) -> None:
    for tool in obs["tools"]:
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise EnvContractError(f"Tool schemas must be OpenAI function tools {{'type': 'function', 'function': {{'name': ...}}}}; got {tool!r:.200}.")
        parameters = function.get("parameters", {"type": "object"})
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise EnvContractError(f"Tool {function['name']!r}: 'parameters' must be a JSON schema of type 'object'; got {parameters!r:.200}.")


def check_step_info(info: dict[str, Any], call: str) -> None:
    missing = [key for key in STEP_INFO_KEYS if key not in info]
    if missing:
        raise EnvContractError(f"{call} must put {missing} in info (AgentEnv does; did a wrapper drop them?).")


def check_reset_determinism(env: gym.Env, seed: int) -> None:
    first, _ = env.reset(seed=seed)
    second, _ = env.reset(seed=seed)
    if first != second:
        raise EnvContractError(
            "reset(seed=s) twice gave different observations: draw tasks and ids from self.np_random "
            "(call super().reset(seed=seed) first) and keep wall-clock values out of observations."
        )


def check_episode_end(env: gym.Env, seed: int, final_action: str, max_steps: int) -> None:
    env.reset(seed=seed)
    for step in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(final_action)
        check_observation(obs, f"step() #{step + 1}")
        check_step_info(info, f"step() #{step + 1}")
        if terminated or truncated:
            break
    else:
        raise EnvContractError(f"The episode did not end within {max_steps} steps of {final_action!r}; set max_turns on the env.")
    missing = [key for key in FINAL_INFO_KEYS if key not in info]
    if missing:
        raise EnvContractError(f"The last step must put {missing} in info.")
    try:
        reason = TerminationReason(info["termination_reason"])
    except ValueError:
        raise EnvContractError(f"info['termination_reason'] = {info['termination_reason']!r} is not one of {[r.value for r in TerminationReason]}.") from None
    if (terminated, truncated) != (not reason.truncates, reason.truncates):
        raise EnvContractError(f"termination_reason {reason.value!r} must come with terminated={not reason.truncates}, truncated={reason.truncates}.")
    if not isinstance(reward, (int, float)) or not isinstance(info["is_success"], bool):
        raise EnvContractError(f"The last step must return a float reward and a bool info['is_success']; got {reward!r}, {info['is_success']!r}.")
    try:
        env.step(final_action)
    except RuntimeError:
        pass
    else:
        raise EnvContractError("step() after the episode ended must raise RuntimeError telling the caller to reset().")


def check_close_twice(env: gym.Env) -> None:
    env.reset()
    env.close()
    env.close()
