"""`LastNumberJudge`: credits the answer where the model puts it, and shapes the format toward `\\boxed{}`."""

from __future__ import annotations

from agent_env.judge import BaseJudge, JudgeResult
from agent_env.judges._fields import output_text, reference
from agent_env.judges.answer_extraction import (
    answers_match,
    count_boxed,
    last_boxed,
    last_number,
    numeric_value,
    reference_answer,
)
from agent_env.types import WorkflowOutput, WorkflowTask

DEFAULT_FORMAT_WEIGHT = 0.1
"""Bonus for writing a ``\\boxed{}``: small next to the 1 for a right answer, enough to pull the format in."""


class LastNumberJudge(BaseJudge):
    """Reward = ``correct + format_weight * format``; the embedded model's default judge (its format shaping is what the arithmetic default trains with).

    The answer is the content of the last complete ``\\boxed{...}`` if there is one, else the last number
    written anywhere in the final answer. ``correct`` (1/0) compares it with ``task.metadata["answer"]``
    (GSM8K ``#### N`` or plain) as exact numbers (``18.0`` = ``18``, ``1,000`` = ``1000``, ``\\frac{1}{2}`` =
    ``0.5``; see `answers_match`). ``format`` (1/0) is whether the text holds exactly one ``\\boxed{}`` and
    that box holds a plain number (`numeric_value`), right or wrong. Anything looser gets gamed: with credit
    for any box, SmolLM2 at lr 1e-4 learned within 10 steps to write empty ``\\boxed{}`` everywhere and stopped
    answering; with credit for any box holding some number, a 36-step run at lr 5e-5 learned to spray boxes
    (``\\boxed{8 - 7} \\times \\boxed{14} = \\boxed{45}``) and its success rate fell to 0.
    ``is_success`` = ``correct``. Fast and synchronous (no math-verify), so it suits thousands of episodes a
    minute. With ``format_weight=0`` it is the anchor's reward (1 for the right last number).

    Args:
        config: the run's config (unused).
        format_weight: weight of the ``format`` component (default `DEFAULT_FORMAT_WEIGHT`).
        output_key: key of the answer text in ``workflow_output.metadata``.
        answer_key: key of the reference in ``task.metadata``.
    """

    def __init__(
        self,
        config: object = None,
        *,
        format_weight: float = DEFAULT_FORMAT_WEIGHT,
        output_key: str = "final_answer",
        answer_key: str = "answer",
    ) -> None:
        super().__init__(config)
        self.format_weight = format_weight
        self.output_key = output_key
        self.answer_key = answer_key

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> JudgeResult:
        text = output_text(self, workflow_output, self.output_key) or ""
        gold = reference_answer(reference(self, workflow_task, self.answer_key))
        correct, fmt = score_last_number(text, gold)
        return JudgeResult(
            correct + self.format_weight * fmt, correct == 1.0, {"correct": correct, "format": fmt}
        )


def score_last_number(text: str, gold: str) -> tuple[float, float]:
    """`(correct, format)` of `text` against the reference `gold`, as `LastNumberJudge` scores them (1.0 or 0.0 each)."""
    boxed = last_boxed(text)
    boxed_number = last_number(boxed) if boxed is not None else None
    answer = boxed if boxed_number is not None else last_number(text)
    correct = 1.0 if answer is not None and answers_match(answer, gold) else 0.0
    one_box = boxed is not None and count_boxed(text) == 1
    return correct, 1.0 if one_box and numeric_value(boxed) is not None else 0.0
