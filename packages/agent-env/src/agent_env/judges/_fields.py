"""Reading the answer and the reference out of an episode, with errors that name the missing key."""

from __future__ import annotations

from typing import Any

from agent_env.types import WorkflowOutput, WorkflowTask


def output_text(judge: object, workflow_output: WorkflowOutput, key: str) -> str | None:
    """`workflow_output.metadata[key]` as text (None stays None); a missing key is a clear `KeyError`."""
    if key not in workflow_output.metadata:
        raise KeyError(
            f"{type(judge).__name__} reads workflow_output.metadata[{key!r}], which the workflow did not set "
            f"(it set {sorted(workflow_output.metadata)}); return WorkflowOutput(metadata={{{key!r}: ...}}) "
            f"from the workflow, or pass output_key= to the judge."
        )
    value: Any = workflow_output.metadata[key]
    return None if value is None else str(value)


def reference(judge: object, workflow_task: WorkflowTask, key: str = "answer") -> Any:
    """`workflow_task.task.metadata[key]`; a missing key is a clear `KeyError`."""
    metadata = workflow_task.task.metadata
    if key not in metadata:
        raise KeyError(
            f"{type(judge).__name__} compares with task.metadata[{key!r}], which task {workflow_task.task_id!r} "
            f"lacks (it has {sorted(metadata)}); map the dataset's answer column to it (answer_field=...)."
        )
    return metadata[key]
