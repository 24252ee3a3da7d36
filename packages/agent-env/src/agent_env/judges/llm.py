"""`LLMJudge`: a model behind any OpenAI-compatible endpoint grades the answer against a rubric."""

from __future__ import annotations

import asyncio
import re
import weakref
from typing import Any

from agent_env.judge import BaseJudge, JudgeResult
from agent_env.judges._fields import output_text
from agent_env.types import WorkflowOutput, WorkflowTask

DEFAULT_RUBRIC = (
    "You grade a response to a problem. Compare the response's final answer with the reference answer; the "
    "reasoning does not need to be perfect, but the final answer must mean the same as the reference "
    "(different formatting, units written out or equivalent expressions are fine). Give 1 for a correct final "
    "answer, 0 for a wrong or missing one, or a fraction for partial credit."
)
DEFAULT_PROMPT_TEMPLATE = (
    "Problem:\n{question}\n\nReference answer:\n{reference}\n\nResponse:\n{response}\n\n"
    "Think briefly, then end with a line of the form `SCORE: <number between 0 and 1>`."
)
_SCORE = re.compile(r"score\s*[:=]\s*\**\s*(-?\d+(?:\.\d+)?)(\s*/\s*\d+(?:\.\d+)?)?", re.IGNORECASE)


def parse_score(reply: str) -> float | None:
    """The last ``SCORE: x`` (or ``score = x/10``) in a grader's reply, clamped to [0, 1]; None if absent."""
    matches = _SCORE.findall(reply)
    if not matches:
        return None
    value, denominator = matches[-1]
    score = float(value)
    if denominator:
        scale = float(denominator.strip().lstrip("/").strip())
        score = score / scale if scale else 0.0
    return min(1.0, max(0.0, score))


class LLMJudge(BaseJudge):
    """Ask a grader model (any OpenAI-compatible chat endpoint) to score the final answer against a rubric.

    The grader gets `rubric` as its system message and `prompt_template` filled with ``{question}``
    (``task.main_query``), ``{reference}`` (``task.metadata["answer"]``, empty if absent) and ``{response}``
    (``workflow_output.metadata["final_answer"]``). Its reply must end with ``SCORE: x``; reward = x clamped
    to [0, 1] (``x/10`` style is scaled). ``is_success`` = reward >= `success_threshold`.

    Components: ``score`` (the reward), ``parse_error`` (1 when the reply had no score; reward 0 then).
    An unreachable endpoint or an API error raises `RuntimeError` naming the endpoint (not a silent 0,
    which would train on noise).

    Args:
        base_url: the endpoint, e.g. ``http://127.0.0.1:8000/v1``.
        model: the grader model's name at that endpoint.
        api_key: sent as a bearer token (many local servers ignore it).
        rubric, prompt_template: see above.
        temperature, max_tokens: sampling settings of the grader.
        timeout_s: seconds per request; `max_retries`: the OpenAI client's retries.
        success_threshold: reward at or above which the episode counts as a success.
    """

    def __init__(
        self,
        config: object = None,
        *,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        rubric: str = DEFAULT_RUBRIC,
        prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
        temperature: float = 0.0,
        max_tokens: int = 512,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        success_threshold: float = 0.5,
        output_key: str = "final_answer",
        answer_key: str = "answer",
    ) -> None:
        super().__init__(config)
        for field in ("question", "reference", "response"):
            if "{" + field + "}" not in prompt_template:
                raise ValueError(
                    f"LLMJudge prompt_template must contain {{{field}}}; got {prompt_template!r}."
                )
        self.base_url = base_url
        self.model = model
        self.api_key = api_key
        self.rubric = rubric
        self.prompt_template = prompt_template
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.success_threshold = success_threshold
        self.output_key = output_key
        self.answer_key = answer_key
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def messages(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> list[dict[str, str]]:
        """The chat messages sent to the grader for this episode."""
        response = output_text(self, workflow_output, self.output_key) or ""
        prompt = self.prompt_template.format(
            question=workflow_task.task.main_query,
            reference=workflow_task.task.metadata.get(self.answer_key, ""),
            response=response,
        )
        return [{"role": "system", "content": self.rubric}, {"role": "user", "content": prompt}]

    async def compute_reward(
        self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput
    ) -> JudgeResult:
        import openai

        messages = self.messages(workflow_task, workflow_output)
        try:
            completion = await self._client().chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
            )
        except openai.OpenAIError as error:
            raise RuntimeError(
                f"LLMJudge could not get a grade from {self.base_url} (model {self.model!r}): "
                f"{type(error).__name__}: {error}. Check that the server is up and serves that model."
            ) from error
        reply = completion.choices[0].message.content or ""
        score = parse_score(reply)
        if score is None:
            return JudgeResult(0.0, False, {"score": 0.0, "parse_error": 1.0})
        return JudgeResult(score, score >= self.success_threshold, {"score": score, "parse_error": 0.0})

    def _client(self) -> Any:
        """One `openai.AsyncOpenAI` per event loop (its HTTP pool is bound to the loop that first used it)."""
        import openai

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                timeout=self.timeout_s,
                max_retries=self.max_retries,
            )
            self._clients[loop] = client
        return client
