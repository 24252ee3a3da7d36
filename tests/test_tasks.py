"""Task sources: the built-in arithmetic generator (pinned to the anchor), local files, Hugging Face datasets."""

from __future__ import annotations

import ast
import csv
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from agent_env.tasks import (
    SYS,
    ArithmeticTasks,
    FileTasks,
    HuggingFaceTasks,
    TaskSourceError,
    make_task_source,
    resolve_dataset,
)
from agent_env.types import Task

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ANCHOR = SHARED / "anchors/trl_grpo_arithmetic.py"


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
    assert task.init_messages[0] == {
        "role": "system",
        "content": "Solve the problem. Put the final answer in \\boxed{}.",
    }
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


# ---------------------------------------------------------------- local files

ROWS = [
    {"problem": "What is 2 + 2?", "solution": "2 + 2 = 4\n#### 4", "uid": "a1", "topic": "add"},
    {"problem": "What is 3 * 5?", "solution": "#### 15", "uid": "b2", "topic": "mul"},
    {"problem": "Half of 9?", "solution": "4.5", "uid": "c3", "topic": "div"},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    fmt = path.suffix
    if fmt == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt == ".json":
        path.write_text(json.dumps(rows))
    elif fmt == ".csv":
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow
        import pyarrow.parquet

        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_file_format_gives_the_same_tasks(tmp_path, suffix):
    path = write_rows(tmp_path / f"probs{suffix}", ROWS)
    tasks = FileTasks(path, query_field="problem", answer_field="solution", id_field="uid", system_prompt=SYS)
    assert len(tasks) == 3
    first = tasks[0]
    assert first.task_id == "a1"
    assert first.main_query == "What is 2 + 2?"
    assert first.init_messages == [
        {"role": "system", "content": SYS},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    assert first.metadata == {**ROWS[0], "answer": "2 + 2 = 4\n#### 4"}
    assert first.env_type == "probs"
    assert [t.task_id for t in tasks] == ["a1", "b2", "c3"]


def test_without_id_field_ids_are_the_file_stem_and_row_index(tmp_path):
    path = write_rows(tmp_path / "probs.jsonl", ROWS)
    tasks = FileTasks(path, query_field="problem", answer_field=None, n=2)
    assert [t.task_id for t in tasks] == ["probs-0", "probs-1"]
    assert "answer" not in tasks[0].metadata
    assert tasks[0].init_messages == [{"role": "user", "content": "What is 2 + 2?"}]


def test_a_row_missing_a_field_names_the_file_row_field_and_the_fields_it_has(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(ROWS[0]) + "\n\n" + json.dumps({"problem": "What is 1 + 1?", "uid": "x"}) + "\n"
    )
    with pytest.raises(TaskSourceError) as error:
        FileTasks(path, query_field="problem", answer_field="solution")
    assert str(error.value) == (
        f"{path} row 2 (line 3): missing field 'solution' (answer_field); the row has fields ['problem', 'uid']. "
        "Set answer_field= to the column that holds it."
    )


def test_csv_and_parquet_errors_name_the_row_too(tmp_path):
    csv_path = write_rows(
        tmp_path / "q.csv", [{"question": "q1", "answer": "1"}, {"question": "q2", "answer": "2"}]
    )
    with pytest.raises(
        TaskSourceError,
        match=r"q\.csv row 1 \(line 2\): missing field 'uid' \(id_field\); the row has fields \['answer', 'question'\]",
    ):
        FileTasks(csv_path, id_field="uid")
    parquet_path = write_rows(tmp_path / "q.parquet", ROWS)
    with pytest.raises(TaskSourceError, match=r"q\.parquet row 1: missing field 'question' \(query_field\)"):
        FileTasks(parquet_path)


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(TaskSourceError, match="does not exist"):
        FileTasks(tmp_path / "missing.jsonl")
    (tmp_path / "data.txt").write_text("{}")
    with pytest.raises(TaskSourceError, match="pass format= one of jsonl, json, parquet, csv"):
        FileTasks(tmp_path / "data.txt")
    (tmp_path / "broken.jsonl").write_text('{"question": "q", "answer": "1"}\n{"question": \n')
    with pytest.raises(TaskSourceError, match=r"broken\.jsonl row 2 \(line 2\) is not valid JSON"):
        FileTasks(tmp_path / "broken.jsonl")
    (tmp_path / "obj.json").write_text('{"question": "q"}')
    with pytest.raises(TaskSourceError, match="expected a JSON array of objects"):
        FileTasks(tmp_path / "obj.json")


def test_gsm8k_train_file_keeps_the_whole_answer(gsm8k_train):
    tasks = FileTasks(gsm8k_train)
    assert len(tasks) == 7473
    first = tasks[0]
    assert first.main_query.startswith("Natalia sold clips to 48 of her friends in April")
    assert first.metadata["answer"].endswith("#### 72") and "<<48/2=24>>" in first.metadata["answer"]
    assert first.task_id == "train-0"


def test_gsm8k_tasks_and_the_judges_agree_on_the_answer(gsm8k_train):
    from agent_env.judges import LastNumberJudge
    from agent_env.types import WorkflowOutput, WorkflowTask

    task = FileTasks(gsm8k_train, n=1)[0]
    result = LastNumberJudge().compute_reward(
        WorkflowTask(task=task), WorkflowOutput(metadata={"final_answer": r"\boxed{72}"})
    )
    assert result.components == {"correct": 1.0, "format": 1.0}


# ---------------------------------------------------------------- Hugging Face datasets


@pytest.mark.parametrize(
    ("dataset_path", "config_name", "resolved"),
    [
        ("openai/gsm8k", None, ("openai/gsm8k", "main")),
        ("openai/gsm8k", "socratic", ("openai/gsm8k", "socratic")),
        ("gsm8k", None, ("openai/gsm8k", "main")),
        ("gsm8k/main", None, ("openai/gsm8k", "main")),
        ("gsm8k/socratic", None, ("openai/gsm8k", "socratic")),
        ("openai/gsm8k/main", None, ("openai/gsm8k", "main")),
        ("someone/other", "cfg", ("someone/other", "cfg")),
    ],
)
def test_dataset_paths_resolve_like_the_tutorial_means_them(dataset_path, config_name, resolved):
    assert resolve_dataset(dataset_path, config_name) == resolved


def test_a_path_and_config_that_disagree_are_an_error():
    with pytest.raises(TaskSourceError, match="names config 'main' but config_name is 'socratic'"):
        resolve_dataset("gsm8k/main", "socratic")


def test_a_local_file_given_as_dataset_path_is_read_directly(tmp_path):
    path = write_rows(tmp_path / "train.parquet", ROWS)
    tasks = HuggingFaceTasks(str(path), "train", query_field="problem", answer_field="solution")
    assert [t.main_query for t in tasks] == [r["problem"] for r in ROWS]


_OFFLINE_SCRIPT = """
import sys
from agent_env.tasks import HuggingFaceTasks, TaskSourceError
folder = sys.argv[1]
local = HuggingFaceTasks(folder, "train", query_field="problem", answer_field="solution", id_field="uid")
print("LOCAL", [t.task_id for t in local], local[0].metadata["answer"] == "2 + 2 = 4\\n#### 4")
for path in ("openai/gsm8k", "gsm8k/main"):
    try:
        HuggingFaceTasks(path, "train")
    except TaskSourceError as error:
        print("ERROR", error)
"""


def test_hub_unreachable_is_a_clear_error_and_local_folders_still_load(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    write_rows(folder / "train.jsonl", ROWS)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
    }
    out = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "LOCAL ['a1', 'b2', 'c3'] True"
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(errors) == 2
    for line in errors:
        assert (
            "Could not load dataset 'openai/gsm8k' (config 'main', split 'train') from the Hugging Face Hub"
            in line
        )
        assert "offline mode is on (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1)" in line
        assert "task_reader `type: dataset_file`" in line and "`type: arithmetic`" in line


# ---------------------------------------------------------------- the factory


def test_make_task_source_builds_each_kind(tmp_path):
    path = write_rows(tmp_path / "q.jsonl", ROWS)
    arithmetic = make_task_source("arithmetic", level="mix", split="validation")
    assert isinstance(arithmetic, ArithmeticTasks) and len(arithmetic) == 256
    local = make_task_source("local_file", path=path, query_field="problem", answer_field="solution")
    assert len(local) == 3 and local[1].metadata["answer"] == "#### 15"
    assert [
        t.task_id
        for t in make_task_source(
            "jsonl_dataset_file", path=str(path), query_field="problem", answer_field=None
        )
    ] == [
        "q-0",
        "q-1",
        "q-2",
    ]


def test_make_task_source_suggests_names():
    with pytest.raises(TaskSourceError, match="Unknown task source 'arithmetc'.*Did you mean 'arithmetic'"):
        make_task_source("arithmetc")
    with pytest.raises(
        TaskSourceError,
        match=r"does not take 'levle'; it takes level, split, n, seed. \('levle': did you mean 'level'\?\)",
    ):
        make_task_source("arithmetic", levle="easy")


# ---------------------------------------------------------------- the calculator level (tool use)

_CALCULATOR_FORMS = {
    "product": re.compile(r"What is (\d+) \* (\d+)\?"),
    "sum": re.compile(r"What is (\d+(?: \+ \d+)+)\?"),
    "power": re.compile(r"What is (\d+) \*\* (\d+)\?"),
    "remainder": re.compile(r"What is (\d+) % (\d+)\?"),
}


def _calculator_form(question: str) -> tuple[str, list[int]]:
    """The form of a calculator question and its operands, read by the documented patterns (each must match exactly one)."""
    matches = [(form, pattern.fullmatch(question)) for form, pattern in _CALCULATOR_FORMS.items()]
    found = [(form, match) for form, match in matches if match]
    assert len(found) == 1, f"{question!r} matches {[f for f, _ in found]} of the four calculator forms"
    form, match = found[0]
    if form == "sum":
        return form, [int(term) for term in match.group(1).split(" + ")]
    return form, [int(match.group(1)), int(match.group(2))]


def _integer_value(expression: str) -> int:
    """The value of a `+ * ** %` expression of integer literals, computed by walking its syntax tree (nothing
    else is accepted, so this is an independent recomputation, not an `eval` of arbitrary text)."""
    operators = {ast.Add: lambda a, b: a + b, ast.Mult: lambda a, b: a * b, ast.Pow: lambda a, b: a**b, ast.Mod: lambda a, b: a % b}

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in operators:
            return operators[type(node.op)](value(node.left), value(node.right))
        raise AssertionError(f"unexpected syntax {ast.dump(node)} in {expression!r}")

    return value(ast.parse(expression, mode="eval").body)


def test_calculator_level_is_seeded_reproducible_and_has_a_prefix_property():
    train = ArithmeticTasks("calculator", "train")
    assert len(train) == 4000 and len(ArithmeticTasks("calculator", "validation")) == 256
    again = ArithmeticTasks("calculator", "train", n=300)
    assert [(t.main_query, t.metadata) for t in again] == [(t.main_query, t.metadata) for t in train[:300]]
    assert [t.task_id for t in again[:2]] == ["arith-calculator-train-0", "arith-calculator-train-1"]
    validation = ArithmeticTasks("calculator", "validation", n=300)
    assert [t.main_query for t in validation] != [t.main_query for t in again]
    # products and sums of 4-digit numbers practically never repeat: the held-out split is not the training one
    big = {t.main_query for t in validation if "**" not in t.main_query}
    assert len(big & {t.main_query for t in train}) <= 2
    assert [t.main_query for t in ArithmeticTasks("calculator", "train", n=20, seed=5)] != [t.main_query for t in train[:20]]
    assert all(t.env_type == "arithmetic" and t.init_messages == [{"role": "system", "content": SYS}, {"role": "user", "content": t.main_query}]
               and t.metadata["level"] == "calculator" for t in validation)


def test_first_calculator_problems_are_pinned():
    """Pinned by hand so a change of the generator (or of the order of its draws) is noticed."""
    assert [(t.main_query, t.metadata["answer"]) for t in ArithmeticTasks("calculator", "train", n=4)] == [
        ("What is 2033 + 5179 + 2931 + 9117 + 8364?", "27624"),
        ("What is 693244 % 55?", "24"),
        ("What is 8993 + 1464 + 7386?", "17843"),
        ("What is 646944 % 7?", "4"),
    ]
    assert [(t.main_query, t.metadata["answer"]) for t in ArithmeticTasks("calculator", "validation", n=3)] == [
        ("What is 1600 * 1490?", "2384000"),
        ("What is 32 ** 5?", "33554432"),
        ("What is 88 ** 4?", "59969536"),
    ]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_calculator_answers_are_the_value_of_the_question(split):
    for task in ArithmeticTasks("calculator", split):
        expression = task.main_query.removeprefix("What is ").removesuffix("?")
        assert set(expression) <= set("0123456789+*% "), task.main_query
        answer = task.metadata["answer"]
        assert answer == str(_integer_value(expression)), task.main_query
        assert answer == str(eval(expression))  # noqa: S307 - checked above to be digits and + * ** % only
        assert answer.isdigit()  # a plain non-negative integer string, as the judges compare it


def test_calculator_forms_all_occur_with_their_documented_ranges():
    seen: dict[str, list[list[int]]] = {form: [] for form in _CALCULATOR_FORMS}
    tasks = ArithmeticTasks("calculator", "train")
    for task in tasks:
        form, operands = _calculator_form(task.main_query)
        seen[form].append(operands)
        if form == "product":
            assert all(100 <= x <= 9999 for x in operands), task.main_query
        elif form == "sum":
            assert 3 <= len(operands) <= 5 and all(1000 <= x <= 9999 for x in operands), task.main_query
        elif form == "power":
            a, k = operands
            assert 11 <= a <= 99 and 3 <= k <= 6, task.main_query
        else:
            a, m = operands
            assert 10000 <= a <= 999999 and 7 <= m <= 97, task.main_query
    # a quarter each in expectation: 1000 ± 5 standard deviations (27.4) of a binomial(4000, 1/4)
    assert all(1000 - 137 <= len(found) <= 1000 + 137 for found in seen.values()), {f: len(v) for f, v in seen.items()}
    # the ranges are used, not just respected: every exponent and every sum length, operands near both ends
    assert {k for _, k in seen["power"]} == {3, 4, 5, 6}
    assert {len(terms) for terms in seen["sum"]} == {3, 4, 5}
    products = [x for pair in seen["product"] for x in pair]
    assert min(products) < 200 and max(products) > 9900
    powers = [a for a, _ in seen["power"]]
    assert min(powers) == 11 and max(powers) == 99
    moduli = [m for _, m in seen["remainder"]]
    assert min(moduli) == 7 and max(moduli) == 97


def test_the_tool_use_config_loads_the_calculator_level():
    from agent_env.config import load_config
    from agent_env.from_config import tasks_from_config

    config = load_config(Path(__file__).resolve().parents[1] / "examples" / "tool_use" / "tool_use.yaml")
    reader = config.ajet.task_reader
    assert reader.type == "arithmetic" and reader.source.level == "calculator"
    train, validation = tasks_from_config(config, "train"), tasks_from_config(config, "validation")
    assert isinstance(train, ArithmeticTasks) and (train.level, train.split, len(train)) == ("calculator", "train", 4000)
    assert (validation.level, validation.split, len(validation)) == ("calculator", "validation", reader.source.num_validation)
    assert [t.main_query for t in validation] == [t.main_query for t in ArithmeticTasks("calculator", "validation", n=len(validation))]
    assert make_task_source("arithmetic", level="calculator", split="val", n=3)[0].main_query == "What is 1600 * 1490?"
