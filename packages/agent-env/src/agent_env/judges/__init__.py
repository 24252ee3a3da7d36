"""Judges: math-verify, exact, regex, last-number, LLM-as-judge and composite rewards."""

from agent_env.judges.math import MathAnswerAsJudge
from agent_env.judges.math_verifier import MathVerifier, VerifyResult

__all__ = ["MathAnswerAsJudge", "MathVerifier", "VerifyResult"]
