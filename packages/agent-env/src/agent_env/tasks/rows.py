"""Turning a dataset row into a `Task`: the field mapping and its errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent_env.types import Task


class TaskSourceError(ValueError):
    """A task source cannot produce tasks: a missing file or field, a bad format, an unreachable hub."""


@dataclass(frozen=True)
class FieldMap:
    """Which columns of a row become the task's parts.

    Attributes:
        query_field: column of the question; becomes ``main_query`` (and the user message).
        answer_field: column of the reference answer; copied whole into ``metadata["answer"]`` (GSM8K's
            ``"...#### 18"`` stays as is; judges extract the final part). None: the rows have no answer.
        id_field: column of a stable id; becomes ``task_id``. None: ``"{id_prefix}-{row index}"``.
    """

    query_field: str = "question"
    answer_field: str | None = "answer"
    id_field: str | None = None


def row_to_task(
    row: Mapping[str, Any],
    *,
    index: int,
    where: str,
    fields: FieldMap,
    id_prefix: str,
    env_type: str,
    system_prompt: str | None = None,
) -> Task:
    """Build the `Task` of one row. `where` names the row in errors (e.g. ``"data.csv row 3 (line 4)"``).

    ``metadata`` holds every column of the row (so judges can use any of them), with ``metadata["answer"]``
    set from `answer_field`. ``init_messages`` is ``[system_prompt?, user question]``.
    Raises `TaskSourceError` naming the row, the missing field and the fields the row has.
    """
    if not isinstance(row, Mapping):
        raise TaskSourceError(
            f"{where}: expected an object with named fields, got {type(row).__name__}: {row!r:.200}."
        )
    for role, name in (
        ("query_field", fields.query_field),
        ("answer_field", fields.answer_field),
        ("id_field", fields.id_field),
    ):
        if name is not None and name not in row:
            raise TaskSourceError(
                f"{where}: missing field {name!r} ({role}); the row has fields {sorted(row)}. "
                f"Set {role}= to the column that holds it."
            )
    question = str(row[fields.query_field])
    metadata = dict(row)
    if fields.answer_field is not None:
        metadata["answer"] = row[fields.answer_field]
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": question})
    task_id = str(row[fields.id_field]) if fields.id_field is not None else f"{id_prefix}-{index}"
    return Task(
        main_query=question, init_messages=messages, task_id=task_id, env_type=env_type, metadata=metadata
    )
