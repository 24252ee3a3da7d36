"""`ExactMatchJudge`: the extracted answer must equal the reference as a string (after trimming)."""

from __future__ import annotations

from typing import Literal

from agent_env.judge import BaseJudge, JudgeResult
from agent_env.judges._fields import output_text, reference
from agent_env.judges.answer_extraction import last_boxed, last_number, reference_answer
from agent_env.types import WorkflowOutput, WorkflowTask

Extract = Literal["boxed", "last_number", "none"]


class ExactMatchJudge(BaseJudge):
    """Reward 1 when the extracted answer equals the reference string, else 0 (what the tutorial's judge does).

    `extract` picks what is compared: ``boxed`` (the last complete ``\\boxed{...}``; default), ``last_number``
    or ``none`` (the whole final answer). Both sides are stripped and runs of whitespace collapsed; case is
    ignored unless `case_sensitive`. The reference is ``task.metadata["answer"]``, after its last ``####`` if
    it has one. No normalisation of numbers: ``1,000`` does not equal ``1000`` (use `MathAnswerAsJudge` or
    `LastNumberJudge` for that).

    Components: ``correct`` (1/0), ``extracted`` (something to compare was found). ``is_success`` = ``correct``.
    """

    def __init__(
        self,
        config: object = None,
        *,
        extract: Extract = "boxed",
        case_sensitive: bool = False,
        output_key: str = "final_answer",
        answer_key: str = "answer",
    ) -> None:
        super().__init__(config)
        if extract not in ("boxed", "last_number", "none"):
            raise ValueError(f"extract must be 'boxed', 'last_number' or 'none', got {extract!r}.")
        self.extract = extract
        self.case_sensitive = case_sensitive
        self.output_key = output_key
        self.answer_key = answer_key

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> JudgeResult:
        text = output_text(self, workflow_output, self.output_key)
        gold = reference_answer(reference(self, workflow_task, self.answer_key))
        if text is None:
            answer = None
        elif self.extract == "boxed":
            answer = last_boxed(text)
        elif self.extract == "last_number":
            answer = last_number(text)
        else:
            answer = text
        correct = answer is not None and self._normal(answer) == self._normal(gold)
        return JudgeResult(
            float(correct), correct, {"correct": float(correct), "extracted": float(answer is not None)}
        )

    def _normal(self, text: str) -> str:
        text = " ".join(text.split())
        return text if self.case_sensitive else text.casefold()
