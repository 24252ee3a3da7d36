"""Judges: math-verify, exact, regex, last-number, LLM-as-judge and composite rewards.

Importing this package is light: math-verify runs in worker processes and `openai` is imported on first use.
"""

from agent_env.judges.composite import ARGUMENTS, Component, CompositeJudge
from agent_env.judges.exact import ExactMatchJudge
from agent_env.judges.last_number import LastNumberJudge
from agent_env.judges.llm import LLMJudge
from agent_env.judges.math import MathAnswerAsJudge
from agent_env.judges.math_verifier import MathVerifier, VerifyResult
from agent_env.judges.regex import RegexJudge

__all__ = [
    "ARGUMENTS",
    "Component",
    "CompositeJudge",
    "ExactMatchJudge",
    "LastNumberJudge",
    "LLMJudge",
    "MathAnswerAsJudge",
    "MathVerifier",
    "RegexJudge",
    "VerifyResult",
]
