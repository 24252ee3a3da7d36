"""`RegexJudge`: a regular expression extracts the answer (or just has to match)."""

from __future__ import annotations

import re
from typing import Literal

from agent_env.judge import BaseJudge, JudgeResult
from agent_env.judges._fields import output_text, reference
from agent_env.judges.answer_extraction import answers_match, reference_answer
from agent_env.types import WorkflowOutput, WorkflowTask


class RegexJudge(BaseJudge):
    """Judge the final answer with a regular expression.

    ``mode="extract"`` (default): the LAST match of `pattern` gives the answer: its group named ``answer`` if
    the pattern has one, else its group 1 if it has groups, else the whole match. Reward 1 when that answer
    equals the reference (``task.metadata["answer"]``, after its last ``####``) by `answers_match` (exact
    numbers when the reference is a number, else case- and space-insensitive text), else 0.
    ``mode="match"``: reward 1 when `pattern` occurs at all (a format check; no reference needed).

    Components: ``matched`` (1/0), and in extract mode ``correct`` (1/0). ``is_success`` = reward == 1.

    Args:
        pattern: the regular expression (Python `re` syntax), e.g. ``r"Answer:\\s*(.+)"``.
        mode: ``extract`` or ``match``.
        ignore_case: compile with `re.IGNORECASE`.
        dotall: compile with `re.DOTALL`.
    """

    def __init__(
        self,
        config: object = None,
        *,
        pattern: str,
        mode: Literal["extract", "match"] = "extract",
        ignore_case: bool = False,
        dotall: bool = False,
        output_key: str = "final_answer",
        answer_key: str = "answer",
    ) -> None:
        super().__init__(config)
        if mode not in ("extract", "match"):
            raise ValueError(f"mode must be 'extract' or 'match', got {mode!r}.")
        flags = (re.IGNORECASE if ignore_case else 0) | (re.DOTALL if dotall else 0)
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as error:
            raise ValueError(
                f"RegexJudge pattern {pattern!r} is not a valid regular expression: {error}."
            ) from error
        self.mode = mode
        self.output_key = output_key
        self.answer_key = answer_key

    def compute_reward(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> JudgeResult:
        text = output_text(self, workflow_output, self.output_key) or ""
        matches = list(self.pattern.finditer(text))
        matched = 1.0 if matches else 0.0
        if self.mode == "match":
            return JudgeResult(matched, bool(matches), {"matched": matched})
        gold = reference_answer(reference(self, workflow_task, self.answer_key))
        correct = 0.0
        if matches:
            last = matches[-1]
            if "answer" in self.pattern.groupindex:
                answer = last.group("answer")
            elif self.pattern.groups:
                answer = last.group(1)
            else:
                answer = last.group(0)
            correct = 1.0 if answer is not None and answers_match(answer, gold) else 0.0
        return JudgeResult(correct, correct == 1.0, {"matched": matched, "correct": correct})
