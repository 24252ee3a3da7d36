"""The built-in, seeded arithmetic task generator, in difficulty levels.

Levels (every operand drawn uniformly from the closed range shown, with one `random.Random(seed)` per split):

- ``easy``: ``a ± b`` with ``a, b ∈ [1, 20]``.
- ``mix``: one third each (in expectation) of ``a + b`` and ``a - b`` with ``a, b ∈ [10, 99]``, and
  ``a * b`` with ``a ∈ [2, 9]``, ``b ∈ [10, 99]``.
- ``hard``: three operands with parentheses, ``(a p b) q c`` or ``a q (b p c)`` (each form half the time),
  ``p ∈ {+, -}`` on two operands from ``[10, 99]``; ``q ∈ {+, -, *}``; the operand ``q`` brings is from
  ``[10, 99]`` for ``±`` and from ``[2, 9]`` for ``*``. Answers lie in ``[-801, 1782]``.
- ``calculator``: problems a small model cannot do in its head but one line of Python can, written with Python's
  operators so that the question is the code: a quarter each (in expectation) of ``a * b`` with
  ``a, b ∈ [100, 9999]``; sums of 3 to 5 operands from ``[1000, 9999]``; ``a ** k`` with ``a ∈ [11, 99]``,
  ``k ∈ [3, 6]``; ``a % m`` with ``a ∈ [10000, 999999]``, ``m ∈ [7, 97]``. Used to teach an agent its python
  tool (``examples/tool_use/``).

``easy`` and ``mix`` reproduce ``make(n, seed)`` of the TRL reference run (docs/design.md, "The TRL reference
run") exactly: same draws in the same order, same phrasing ``"What is {a} {op} {b}?"``, same system prompt `SYS`,
answers as strings; ``train`` = ``make(4000, 1)`` and ``validation`` = ``make(256, 2)``. So runs on these tasks
compare with that run's numbers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Literal, overload

from agent_env.types import Task

SYS = "Solve the problem. Put the final answer in \\boxed{}."
"""The anchor's system prompt, word for word."""

Level = Literal["easy", "mix", "hard", "calculator"]
LEVELS: tuple[str, ...] = ("easy", "mix", "hard", "calculator")

SPLIT_SEEDS: dict[str, int] = {"train": 1, "validation": 2}
"""Default seed per split (the anchor's: train = make(4000, 1), held-out = make(256, 2))."""
SPLIT_SIZES: dict[str, int] = {"train": 4000, "validation": 256}
"""Default number of problems per split."""
SPLIT_ALIASES: dict[str, str] = {"test": "validation", "val": "validation", "eval": "validation"}


def _binary(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def draw_problem(rng: random.Random, level: str) -> tuple[str, int]:
    """Draw one problem of `level` from `rng`; return ``(question, answer)``.

    For ``easy`` and ``mix`` the calls on `rng` are exactly the anchor's, in the same order (the anchor
    draws ``choice("+-*")`` first even for ``easy``, then overrides it).
    """
    if level in ("easy", "mix"):
        op = rng.choice("+-*")
        if level == "easy":
            op = rng.choice("+-")
            a, b = rng.randint(1, 20), rng.randint(1, 20)
        elif op == "*":
            a, b = rng.randint(2, 9), rng.randint(10, 99)
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} {op} {b}?", _binary(a, op, b)
    if level == "hard":
        inner_op = rng.choice("+-")
        outer_op = rng.choice("+-*")
        x, y = rng.randint(10, 99), rng.randint(10, 99)
        z = rng.randint(2, 9) if outer_op == "*" else rng.randint(10, 99)
        inner = _binary(x, inner_op, y)
        if rng.random() < 0.5:
            return f"What is ({x} {inner_op} {y}) {outer_op} {z}?", _binary(inner, outer_op, z)
        return f"What is {z} {outer_op} ({x} {inner_op} {y})?", _binary(z, outer_op, inner)
    if level == "calculator":
        return _calculator_problem(rng)
    raise ValueError(f"Unknown arithmetic level {level!r}; use one of {', '.join(LEVELS)}.")


def _calculator_problem(rng: random.Random) -> tuple[str, int]:
    form = rng.choice(("product", "sum", "power", "remainder"))
    if form == "product":
        a, b = rng.randint(100, 9999), rng.randint(100, 9999)
        return f"What is {a} * {b}?", a * b
    if form == "sum":
        terms = [rng.randint(1000, 9999) for _ in range(rng.randint(3, 5))]
        return f"What is {' + '.join(map(str, terms))}?", sum(terms)
    if form == "power":
        a, k = rng.randint(11, 99), rng.randint(3, 6)
        return f"What is {a} ** {k}?", a**k
    a, m = rng.randint(10000, 999999), rng.randint(7, 97)
    return f"What is {a} % {m}?", a % m


def generate(level: str, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` problems of `level` from ``random.Random(seed)``, as ``(question, answer_string)`` pairs.

    A prefix property holds: ``generate(level, m, seed) == generate(level, n, seed)[:m]`` for ``m <= n``.
    """
    rng = random.Random(seed)
    return [(q, str(ans)) for q, ans in (draw_problem(rng, level) for _ in range(n))]


class ArithmeticTasks(Sequence[Task]):
    """A fixed, seeded list of arithmetic `Task`s of one level and split.

    Each task has ``task_id = "arith-{level}-{split}-{index}"``, ``main_query`` = the question,
    ``init_messages`` = ``[system SYS, user question]`` (the anchor's prompt), ``env_type = "arithmetic"`` and
    ``metadata = {"answer": "<integer as a string>", "level": level}``.

    Args:
        level: ``easy``, ``mix``, ``hard`` or ``calculator`` (see the module docstring for the ranges).
        split: ``train`` or ``validation`` (``test``, ``val`` and ``eval`` mean ``validation``).
        n: number of problems; default 4000 for train, 256 for validation.
        seed: seed of the split's `random.Random`; default 1 for train, 2 for validation (the anchor's).
    """

    def __init__(
        self, level: str = "easy", split: str = "train", n: int | None = None, seed: int | None = None
    ):
        if level not in LEVELS:
            raise ValueError(f"Unknown arithmetic level {level!r}; use one of {', '.join(LEVELS)}.")
        canonical = SPLIT_ALIASES.get(split, split)
        if canonical not in SPLIT_SEEDS:
            raise ValueError(
                f"Unknown arithmetic split {split!r}; use 'train' or 'validation' (or its aliases "
                f"{', '.join(repr(a) for a in SPLIT_ALIASES)})."
            )
        n = SPLIT_SIZES[canonical] if n is None else n
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}.")
        self.level = level
        self.split = canonical
        self.seed = SPLIT_SEEDS[canonical] if seed is None else seed
        self._problems = generate(level, n, self.seed)

    def __len__(self) -> int:
        return len(self._problems)

    @overload
    def __getitem__(self, index: int) -> Task: ...
    @overload
    def __getitem__(self, index: slice) -> list[Task]: ...
    def __getitem__(self, index: int | slice) -> Task | list[Task]:
        if isinstance(index, slice):
            return [self._task(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"task index {index} out of range for {len(self)} arithmetic tasks")
        return self._task(index)

    def __iter__(self) -> Iterator[Task]:
        return (self._task(i) for i in range(len(self)))

    def __repr__(self) -> str:
        return f"ArithmeticTasks(level={self.level!r}, split={self.split!r}, n={len(self)}, seed={self.seed})"

    def _task(self, index: int) -> Task:
        question, answer = self._problems[index]
        return Task(
            task_id=f"arith-{self.level}-{self.split}-{index}",
            main_query=question,
            init_messages=[{"role": "system", "content": SYS}, {"role": "user", "content": question}],
            env_type="arithmetic",
            metadata={"answer": answer, "level": self.level},
        )
