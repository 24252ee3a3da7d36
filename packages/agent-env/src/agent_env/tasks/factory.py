"""`make_task_source`: build a task source from the YAML's `task_reader` type and parameters."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from agent_env.tasks.arithmetic import ArithmeticTasks
from agent_env.tasks.files import FileTasks
from agent_env.tasks.huggingface import HuggingFaceTasks
from agent_env.tasks.rows import TaskSourceError
from agent_env.types import Task

TASK_SOURCES: dict[str, Callable[..., Sequence[Task]]] = {
    "arithmetic": ArithmeticTasks,
    "huggingface_dat_repo": HuggingFaceTasks,
    "local_file": FileTasks,
    "dataset_file": FileTasks,
    "jsonl_dataset_file": FileTasks,
}
"""Task-source kind → its class. ``dataset_file`` and ``jsonl_dataset_file`` (AgentJet's name; the format
still follows the file's suffix or ``format=``) are ``local_file``."""


def make_task_source(kind: str, **params: Any) -> Sequence[Task]:
    """The task source of `kind` built with `params` (the constructor's arguments, by name).

    - ``arithmetic``: `ArithmeticTasks` (level, split, n, seed);
    - ``huggingface_dat_repo``: `HuggingFaceTasks` (dataset_path, split, config_name, query_field, ...);
    - ``local_file`` / ``dataset_file`` / ``jsonl_dataset_file``: `FileTasks` (path, query_field, answer_field, id_field, ...).

    One call gives one split; call it once per split. Raises `TaskSourceError` for an unknown kind (with the
    nearest valid one) or parameter (with the accepted ones).
    """
    factory = TASK_SOURCES.get(kind)
    if factory is None:
        close = difflib.get_close_matches(kind, TASK_SOURCES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TaskSourceError(f"Unknown task source {kind!r}; use one of {', '.join(TASK_SOURCES)}.{hint}")
    accepted = [name for name in inspect.signature(factory).parameters if name != "self"]
    unknown = [name for name in params if name not in accepted]
    if unknown:
        close = {name: difflib.get_close_matches(name, accepted, n=1) for name in unknown}
        hints = "".join(f" ({name!r}: did you mean {c[0]!r}?)" for name, c in close.items() if c)
        raise TaskSourceError(
            f"Task source {kind!r} does not take {', '.join(map(repr, unknown))}; it takes {', '.join(accepted)}.{hints}"
        )
    return factory(**params)
