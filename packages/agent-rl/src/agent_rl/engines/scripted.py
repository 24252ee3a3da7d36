"""`ScriptedEngine`: completions written by a policy over observations instead of sampled by a model.

The collector asks it for a turn with the env's observation (`respond(obs, max_tokens)`), not with token ids,
so a plain `policy(obs) -> text` (e.g. `agent_env.policies.scripted_math_policy`) plays whole episodes through the
real env, judge, tools and chat template. The episodes' samples are then exactly what the model would have been
trained on had it written the same text: demonstrations for a cold start, a perfect-policy baseline, test data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent_rl.engines.base import Completion, NamedTensors, SamplingParams

Policy = Callable[[dict[str, Any]], str]
"""`policy(obs) -> completion text`, for the observation of an `agent_env.AgentEnv` (messages and tools)."""


class ScriptedEngine:
    """An engine whose every turn is `policy(obs)`, tokenized and closed with the end-of-turn token.

    The completion's token ids are the tokenizer's encoding of the text (no special tokens added) followed by
    `end_of_turn_id` (default: the tokenizer's EOS id); text longer than `max_tokens` is cut there and ends
    with `finish_reason="length"`, like a sampled turn would. Logprobs are 0.0: nobody sampled these tokens,
    so train on them with a supervised loss (`Learner.supervised_step`), not with GRPO's ratio.
    """

    def __init__(self, tokenizer: Any, policy: Policy, *, end_of_turn_id: int | None = None, max_model_len: int = 1 << 20) -> None:
        self.tokenizer = tokenizer
        self.policy = policy
        self.end_of_turn_id = tokenizer.eos_token_id if end_of_turn_id is None else end_of_turn_id
        self.max_model_len = max_model_len

    def respond(self, obs: dict[str, Any], max_tokens: int) -> Completion:
        """The policy's answer to `obs` as a completion of at most `max_tokens` tokens."""
        text = self.policy(obs)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.end_of_turn_id]
        if len(ids) > max_tokens:
            ids = ids[:max_tokens]
            return Completion(ids, [0.0] * len(ids), "length", self.tokenizer.decode(ids, skip_special_tokens=True))
        return Completion(ids, [0.0] * len(ids), "stop", text)

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> list[Completion]:
        raise TypeError(
            "ScriptedEngine answers observations, not token ids: use it through RolloutCollector, which calls "
            "respond(obs, max_tokens)."
        )

    async def update_weights(self, weights: NamedTensors) -> None:
        return None

    async def sleep(self, level: int = 1) -> None:
        return None

    async def wake_up(self) -> None:
        return None

    def close(self) -> None:
        return None
