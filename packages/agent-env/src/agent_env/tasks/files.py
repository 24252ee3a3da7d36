"""`FileTasks`: tasks from a local jsonl, json, parquet or csv file with a field mapping."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from agent_env.tasks.rows import FieldMap, TaskSourceError, row_to_task
from agent_env.tasks.task_list import TaskList

FileFormat = Literal["jsonl", "json", "parquet", "csv"]
SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}
"""File suffix → format, used when `format` is not given."""


class FileTasks(TaskList):
    """All tasks of a local file, read and checked when constructed (a bad row fails now, not mid-run).

    Formats: ``jsonl`` (one JSON object per line; blank lines skipped), ``json`` (an array of objects),
    ``parquet``, ``csv`` (a header row; values are strings). Each row becomes a `Task` by `row_to_task`:
    ``main_query`` from `query_field`, ``metadata`` = the whole row with ``metadata["answer"]`` from
    `answer_field`, ``task_id`` from `id_field` or ``"{file stem}-{row index}"``.

    Args:
        path: the file.
        query_field, answer_field, id_field: the field mapping (see `FieldMap`).
        format: one of ``jsonl``, ``json``, ``parquet``, ``csv``; default from the suffix (`SUFFIXES`).
        n: keep only the first `n` rows.
        system_prompt: if given, ``init_messages`` starts with it as a system message.
        env_type: the tasks' ``env_type``; default the file's stem.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        query_field: str = "question",
        answer_field: str | None = "answer",
        id_field: str | None = None,
        format: FileFormat | None = None,
        n: int | None = None,
        system_prompt: str | None = None,
        env_type: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise TaskSourceError(
                f"Task file {str(self.path)!r} does not exist (or is not a file); check the path."
            )
        self.format = format or SUFFIXES.get(self.path.suffix.lower())
        if self.format not in ("jsonl", "json", "parquet", "csv"):
            raise TaskSourceError(
                f"Cannot tell the format of {str(self.path)!r}: pass format= one of jsonl, json, parquet, csv "
                f"(known suffixes: {', '.join(SUFFIXES)})."
            )
        fields = FieldMap(query_field, answer_field, id_field)
        tasks = []
        for index, (where, row) in enumerate(self._rows()):
            if n is not None and index >= n:
                break
            tasks.append(
                row_to_task(
                    row,
                    index=index,
                    where=f"{self.path} {where}",
                    fields=fields,
                    id_prefix=self.path.stem,
                    env_type=env_type or self.path.stem,
                    system_prompt=system_prompt,
                )
            )
        super().__init__(tasks)

    def _rows(self) -> Iterator[tuple[str, Any]]:
        """``(where, row)`` pairs, `where` being ``"row N"`` (1-based) plus the line where that is meaningful."""
        if self.format == "jsonl":
            with self.path.open(encoding="utf-8") as file:
                count = 0
                for line_number, line in enumerate(file, start=1):
                    if not line.strip():
                        continue
                    count += 1
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as error:
                        raise TaskSourceError(
                            f"{self.path} row {count} (line {line_number}) is not valid JSON: {error}."
                        ) from error
                    yield f"row {count} (line {line_number})", row
        elif self.format == "json":
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise TaskSourceError(f"{self.path} is not valid JSON: {error}.") from error
            if not isinstance(data, list):
                raise TaskSourceError(
                    f"{self.path}: expected a JSON array of objects, got a {type(data).__name__}; "
                    f"for one object per line use a .jsonl file."
                )
            for count, row in enumerate(data, start=1):
                yield f"row {count}", row
        elif self.format == "csv":
            with self.path.open(encoding="utf-8-sig", newline="") as file:
                reader = csv.DictReader(file)
                for count, row in enumerate(reader, start=1):
                    yield (
                        f"row {count} (line {reader.line_num})",
                        {k: v for k, v in row.items() if k is not None},
                    )
        else:
            import pyarrow.parquet

            for count, row in enumerate(pyarrow.parquet.read_table(self.path).to_pylist(), start=1):
                yield f"row {count}", row

    def __repr__(self) -> str:
        return f"FileTasks({str(self.path)!r}, format={self.format!r}, n={len(self)})"
