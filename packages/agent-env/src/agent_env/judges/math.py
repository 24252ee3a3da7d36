"""`MathAnswerAsJudge`: the tutorial's math judge, comparing the last `\\boxed{}` with the reference by math-verify."""

from __future__ import annotations

import logging

from agent_env.judge import BaseJudge, JudgeResult
from agent_env.judges._fields import output_text, reference
from agent_env.judges.answer_extraction import (
    is_unevaluated_arithmetic,
    last_boxed,
    last_number,
    reference_answer,
)
from agent_env.judges.math_verifier import MathVerifier, default_verifier
from agent_env.types import WorkflowOutput, WorkflowTask

logger = logging.getLogger(__name__)


class MathAnswerAsJudge(BaseJudge):
    """Reward 1 when the last ``\\boxed{...}`` of the final answer equals the reference, else 0.

    Reads ``workflow_output.metadata["final_answer"]`` and ``task.metadata["answer"]`` (GSM8K's
    ``"...#### 18"`` or a plain ``"18"``). Equality is math-verify's, so ``1,000`` = ``1000``, ``18.0`` = ``18``,
    ``$18`` = ``18``, ``\\frac{1}{2}`` = ``0.5`` = ``1/2`` and ``18 apples`` = ``18``. No ``\\boxed{}`` (or a
    ``None`` final answer) scores 0. A comparison that exceeds `timeout_s` scores 0 with ``timeout`` = 1; one
    that math-verify cannot do (e.g. an unparsable reference) scores 0 and is logged as a warning.

    When the reference is a number, an answer that leaves the arithmetic undone (``\\boxed{1600 \\times 1490}``,
    ``\\boxed{32^5}``) scores 0, although math-verify would evaluate it to the reference: otherwise restating the
    question is a right answer (a policy trained with GRPO on calculator problems found that in ~40 steps and
    stopped using its tool). Set ``accept_unevaluated=True`` for tasks where an expression is a fair answer.

    Components (always all present): ``correct`` (1/0), ``boxed`` (a complete ``\\boxed{}`` was found),
    ``unevaluated`` (the answer was refused for undone arithmetic), ``timeout`` (the comparison timed out).
    ``is_success`` = ``correct``.

    Args:
        config: the run's config, as the tutorial passes it (unused).
        timeout_s: seconds per comparison; default the verifier's (`DEFAULT_TIMEOUT_S`).
        verifier: the `MathVerifier` to use; default the process-wide shared one.
        output_key: key of the answer text in ``workflow_output.metadata``.
        answer_key: key of the reference in ``task.metadata``.
        accept_unevaluated: compare an answer with undone arithmetic too (see above).
    """

    def __init__(
        self,
        config: object = None,
        *,
        timeout_s: float | None = None,
        verifier: MathVerifier | None = None,
        output_key: str = "final_answer",
        answer_key: str = "answer",
        accept_unevaluated: bool = False,
    ) -> None:
        super().__init__(config)
        self.timeout_s = timeout_s
        self.verifier = verifier
        self.output_key = output_key
        self.answer_key = answer_key
        self.accept_unevaluated = accept_unevaluated

    async def compute_reward(
        self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput
    ) -> JudgeResult:
        text = output_text(self, workflow_output, self.output_key)
        gold = reference_answer(reference(self, workflow_task, self.answer_key))
        boxed = last_boxed(text) if text is not None else None
        if boxed is None:
            return JudgeResult(0.0, False, {"correct": 0.0, "boxed": 0.0, "unevaluated": 0.0, "timeout": 0.0})
        if not self.accept_unevaluated and last_number(gold) == gold.strip() and is_unevaluated_arithmetic(boxed):
            return JudgeResult(0.0, False, {"correct": 0.0, "boxed": 1.0, "unevaluated": 1.0, "timeout": 0.0})
        verifier = self.verifier or default_verifier()
        outcome = await verifier.averify(gold, boxed, self.timeout_s)
        if outcome.error is not None:
            logger.warning(
                "math-verify failed on task %r (scored 0): %s", workflow_task.task_id, outcome.error
            )
        correct = 1.0 if outcome.equal else 0.0
        return JudgeResult(
            correct, outcome.equal, {"correct": correct, "boxed": 1.0, "unevaluated": 0.0, "timeout": float(outcome.timed_out)}
        )
