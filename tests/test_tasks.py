"""Task sources: the built-in arithmetic generator (pinned to the anchor), local files, Hugging Face datasets."""

from __future__ import annotations

import ast
import os
import random
from pathlib import Path

import pytest

from agent_env.tasks import SYS, ArithmeticTasks
from agent_env.types import Task

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ANCHOR = SHARED / "anchors/trl_grpo_arithmetic.py"
GSM8K_TRAIN = SHARED / "data/gsm8k/train.jsonl"


def anchor_make(diff: str | None):
    """The anchor's `SYS` and `make(n, seed)`, compiled from its source text (importing it would load a model)."""
    if not ANCHOR.exists():
        pytest.skip(f"{ANCHOR} is absent")
    tree = ast.parse(ANCHOR.read_text())
    keep = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name == "make")
        or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SYS" for t in node.targets))
    ]
    assert len(keep) == 2, "the anchor no longer defines SYS and make(n, seed) at top level"

    class FakeOs:
        environ = {} if diff is None else {"DIFF": diff}

    namespace: dict = {"random": random, "os": FakeOs}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(ANCHOR), "exec"), namespace)
    return namespace["SYS"], namespace["make"]


@pytest.mark.parametrize(("level", "diff"), [("easy", "easy"), ("mix", None)])
@pytest.mark.parametrize(("split", "n", "seed"), [("train", 4000, 1), ("validation", 256, 2)])
def test_easy_and_mix_levels_are_exactly_the_anchor_problems(level, diff, split, n, seed):
    anchor_sys, make = anchor_make(diff)
    rows = make(n, seed)
    tasks = ArithmeticTasks(level, split)
    assert SYS == anchor_sys
    assert len(tasks) == n
    for i, (row, task) in enumerate(zip(rows, tasks, strict=True)):
        assert task.init_messages == row["prompt"]
        assert task.main_query == row["prompt"][1]["content"]
        assert task.metadata == {"answer": row["answer"], "level": level}
        assert task.task_id == f"arith-{level}-{split}-{i}"


def test_first_anchor_problems_are_pinned():
    """Pinned by hand so a change of Python's `random` or of the anchor itself is noticed."""
    easy = ArithmeticTasks("easy", "train")
    mix = ArithmeticTasks("mix", "train")
    assert [(t.main_query, t.metadata["answer"]) for t in easy[:3]] == [
        ("What is 9 + 4?", "13"),
        ("What is 16 - 13?", "3"),
        ("What is 16 + 1?", "17"),
    ]
    assert [(t.main_query, t.metadata["answer"]) for t in mix[:3]] == [
        ("What is 82 + 18?", "100"),
        ("What is 25 - 73?", "-48"),
        ("What is 70 - 93?", "-23"),
    ]


def test_tasks_are_task_objects_with_the_anchor_prompt():
    task = ArithmeticTasks("mix", "validation")[5]
    assert isinstance(task, Task)
    assert task.env_type == "arithmetic"
    assert task.init_messages[0] == {"role": "system", "content": "Solve the problem. Put the final answer in \\boxed{}."}
    assert task.init_messages[1] == {"role": "user", "content": task.main_query}


def test_n_takes_a_prefix_and_seed_changes_the_problems():
    full = ArithmeticTasks("hard", "train")
    assert [t.main_query for t in ArithmeticTasks("hard", "train", n=10)] == [t.main_query for t in full[:10]]
    other = ArithmeticTasks("hard", "train", n=10, seed=123)
    assert [t.main_query for t in other] != [t.main_query for t in full[:10]]
    assert len(ArithmeticTasks("easy", "validation")) == 256


def _evaluate(question: str) -> int:
    expression = question.removeprefix("What is ").removesuffix("?")
    assert set(expression) <= set("0123456789+-*() "), question
    return eval(expression)  # noqa: S307 - the expression is checked to be plain integer arithmetic


@pytest.mark.parametrize("level", ["easy", "mix", "hard"])
def test_answers_are_the_value_of_the_question(level):
    for task in ArithmeticTasks(level, "train", n=500):
        assert task.metadata["answer"] == str(_evaluate(task.main_query))


def test_level_ranges_are_as_documented():
    easy = ArithmeticTasks("easy", "train")
    for t in easy:
        a, op, b = t.main_query.removeprefix("What is ").removesuffix("?").split()
        assert op in "+-" and 1 <= int(a) <= 20 and 1 <= int(b) <= 20
    ops = set()
    for t in ArithmeticTasks("mix", "train"):
        a, op, b = t.main_query.removeprefix("What is ").removesuffix("?").split()
        ops.add(op)
        if op == "*":
            assert 2 <= int(a) <= 9 and 10 <= int(b) <= 99
        else:
            assert 10 <= int(a) <= 99 and 10 <= int(b) <= 99
    assert ops == {"+", "-", "*"}
    hard = ArithmeticTasks("hard", "train")
    assert all(t.main_query.count("(") == 1 for t in hard)
    assert all(-801 <= int(t.metadata["answer"]) <= 1782 for t in hard)
    assert {t.main_query.startswith("What is (") for t in hard} == {True, False}


def test_unknown_level_or_split_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown arithmetic level 'medium'; use one of easy, mix, hard"):
        ArithmeticTasks("medium")
    with pytest.raises(ValueError, match="Unknown arithmetic split 'dev'"):
        ArithmeticTasks("easy", "dev")
    assert ArithmeticTasks("easy", "test").split == "validation"
