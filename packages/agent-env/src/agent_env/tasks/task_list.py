"""`TaskList`: a read-only sequence of already-built `Task`s, the base of the file and hub sources."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from agent_env.types import Task


class TaskList(Sequence[Task]):
    """A read-only, indexable, sized sequence of tasks (``len``, ``[i]``, ``[a:b]``, iteration)."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self._tasks: tuple[Task, ...] = tuple(tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    @overload
    def __getitem__(self, index: int) -> Task: ...
    @overload
    def __getitem__(self, index: slice) -> list[Task]: ...
    def __getitem__(self, index: int | slice) -> Task | list[Task]:
        if isinstance(index, slice):
            return list(self._tasks[index])
        return self._tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)
