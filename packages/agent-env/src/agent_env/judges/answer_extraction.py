"""Pull answers out of model text: the last `\\boxed{...}`, the last number, GSM8K's `#### N`, numeric values."""

from __future__ import annotations

import re
from fractions import Fraction

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"(?<![\w.])[-−]?\d[\d,]*(?:\.\d+)?")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}$")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_NUMBER_THEN_WORDS = re.compile(r"^(-?\d[\d.,/]*)\s*((?:[A-Za-z]{2,}\.?\s*)+)$")
_OPERATION = re.compile(
    r"\d\s*\)?\s*(?:\*\*|[-−+*/^×÷·:%]|\\(?:times|cdot|div|bmod|mod|pmod)\b|\bmod\b)\s*[({]?\s*[-−]?\s*\d"
)
_ANY_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}")
_MATH_WORDS = {"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "mod", "deg", "degrees"}


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``) in `text`, nested braces allowed.

    A ``\\boxed{`` whose braces never close (a truncated completion) is skipped in favour of an earlier
    complete one. Returns None when there is none. The content is returned as written (not stripped).
    """
    for match in reversed(list(_BOXED.finditer(text))):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i]
    return None


def is_unevaluated_arithmetic(answer: str) -> bool:
    """Whether `answer` leaves arithmetic on numbers undone: an operator between two numbers (`1600 * 1490`,
    `32^5`, `679485 \\mod 57`, `1234 + 5678`) or a fraction whose value is a whole number (`\\frac{4768000}{2}`).
    A number with a sign, thousands commas, decimals or units (`-1,234.5 apples`) and a proper fraction
    (`\\frac{1}{2}`) are evaluated answers."""
    text = answer.replace(",", "")
    if _OPERATION.search(text):
        return True
    return any(int(d) != 0 and int(n) % int(d) == 0 for n, d in _ANY_FRAC.findall(text))


def count_boxed(text: str) -> int:
    """How many ``\\boxed{`` (or ``\\fbox{``) openings `text` holds, complete or not."""
    return len(_BOXED.findall(text))


def last_number(text: str) -> str | None:
    """The last number written in `text` (``-1,234.5`` style), with thousands commas removed; None if none.

    A trailing sentence period is not part of the number (``"It is 18."`` gives ``"18"``); a Unicode minus
    is read as ``-``.
    """
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    return numbers[-1].replace(",", "").replace("−", "-").rstrip(".") or None


def reference_answer(answer: object) -> str:
    """The final answer of a reference: the text after the last ``####`` (GSM8K style), else the whole, stripped."""
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return text.strip()


def clean_answer(text: str) -> str:
    """Light, semantics-preserving clean-up of an answer string before comparison.

    Unwraps ``\\text{..}``-style wrappers, drops ``$``/``\\$`` signs, thousands separators (``1,000``,
    ``1{,}000``, ``1\\,000``), ``\\%``/``%``, words after a number (``18 apples``; not ``2 pi``) and
    surrounding spaces; reads a Unicode minus as ``-``.
    """
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = text.replace("\\$", "").replace("$", "").replace("−", "-")
    text = re.sub(r"(?<=\d)(?:,|\{,\}|\\,|\\ )(?=\d{3}(?!\d))", "", text)
    text = text.replace("\\%", "").replace("%", "").strip().rstrip(".").strip()
    match = _NUMBER_THEN_WORDS.match(text)
    if match and not {word.lower().rstrip(".") for word in match.group(2).split()} & _MATH_WORDS:
        text = match.group(1)
    return text


def numeric_value(text: str) -> Fraction | None:
    """The exact value of `text` if it is a plain number (``18``, ``-3.50``, ``1/2``, ``\\frac{1}{2}``,
    ``$1,000``), after `clean_answer`; None otherwise.
    """
    cleaned = clean_answer(text).replace(" ", "")
    match = _FRAC.match(cleaned)
    if match:
        sign, numerator, denominator = match.groups()
        cleaned = f"{sign}{numerator}/{denominator}"
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(answer: str, gold: str) -> bool:
    """Cheap equality of an extracted answer with a reference, without math-verify.

    Exact numeric equality when the reference is a number (`numeric_value`); an answer that is not a plain
    number counts by the last number in it (``x = 5`` gives 5). Otherwise the `clean_answer` forms must be
    equal, ignoring case and spaces.
    """
    gold_value = numeric_value(gold)
    if gold_value is not None:
        value = numeric_value(answer)
        if value is None:
            number = last_number(answer)
            value = numeric_value(number) if number is not None else None
        return value == gold_value
    return _squash(clean_answer(answer)) == _squash(clean_answer(gold))


def _squash(text: str) -> str:
    return "".join(text.split()).casefold()
