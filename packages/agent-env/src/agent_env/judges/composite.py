"""`CompositeJudge`: a reward made of named, weighted components; weight 0 makes a component a logged metric."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent_env.judge import BaseJudge, JudgeResult, as_judge_result, run_judge
from agent_env.judges.answer_extraction import reference_answer
from agent_env.types import WorkflowOutput, WorkflowTask

ARGUMENTS: dict[str, str] = {
    "completion": "workflow_output.metadata[output_key] (the final answer text; None if absent)",
    "answer": "task.metadata[answer_key] as stored (e.g. GSM8K's whole solution; None if absent)",
    "reference": "the final part of `answer`: after its last '####', stripped ('' if absent)",
    "question": "task.main_query",
    "task": "the Task",
    "metadata": "task.metadata",
    "output_metadata": "workflow_output.metadata",
    "workflow_task": "the WorkflowTask",
    "workflow_output": "the WorkflowOutput",
}
"""The parameters a component function may take, by name, and what each receives."""


@dataclass(frozen=True)
class Component:
    """One named part of a composite reward: a judge or a function, and its weight (0 = a logged metric)."""

    fn: Any
    weight: float = 1.0


class CompositeJudge(BaseJudge):
    """Reward = Σ weight × value over named components; every value is reported in ``components``.

    A component is a judge (anything with ``compute_reward``; its value is its reward, and its own components
    are reported as ``"{name}/{key}"``) or a function, sync or ``async``, that takes any of the parameters
    listed in `ARGUMENTS` by name (or ``**kwargs`` for all) and returns a number, a bool, ``(reward,
    is_success)`` or a `JudgeResult`. Components run concurrently; a sync function runs on the event loop,
    so keep it cheap (make a slow one ``async`` or a judge). A component that raises fails the judgement with
    its name in the error.

    ``is_success`` is the success of the component named `success_key`, by default the first one with a
    non-zero weight (put the correctness component first): a judge's own ``is_success``, or value > 0.

    Args:
        components: name → `Component`, ``(fn, weight)`` or a bare ``fn`` (weight 1). Names are the keys in
            ``info`` and the logs.
        success_key: name of the component that decides ``is_success``.
        output_key, answer_key: where ``completion`` and ``answer`` are read from.

    Example::

        CompositeJudge(components={
            "correct": (MathAnswerAsJudge(), 1.0),
            "format": (lambda completion: "\\\\boxed{" in (completion or ""), 0.1),
            "length": (lambda completion: len(completion or ""), 0.0),   # logged, not rewarded
        })
    """

    def __init__(
        self,
        config: object = None,
        *,
        components: Mapping[str, Component | tuple[Any, float] | Callable[..., Any]],
        success_key: str | None = None,
        output_key: str = "final_answer",
        answer_key: str = "answer",
    ) -> None:
        super().__init__(config)
        if not components:
            raise ValueError("CompositeJudge needs at least one component.")
        self.components: dict[str, Component] = {
            name: _as_component(name, spec) for name, spec in components.items()
        }
        if success_key is None:
            weighted = [name for name, c in self.components.items() if c.weight != 0]
            success_key = (weighted or list(self.components))[0]
        elif success_key not in self.components:
            raise ValueError(
                f"success_key {success_key!r} is not a component; components: {sorted(self.components)}."
            )
        self.success_key = success_key
        self.output_key = output_key
        self.answer_key = answer_key

    async def compute_reward(
        self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput
    ) -> JudgeResult:
        arguments = self._arguments(workflow_task, workflow_output)
        names = list(self.components)
        results = await asyncio.gather(
            *(self._evaluate(name, self.components[name].fn, arguments) for name in names)
        )
        reward = 0.0
        values: dict[str, float] = {}
        for name, result in zip(names, results, strict=True):
            reward += self.components[name].weight * result.reward
            values[name] = result.reward
            values.update({f"{name}/{key}": value for key, value in result.components.items()})
        success = dict(zip(names, results, strict=True))[self.success_key].is_success
        return JudgeResult(reward, success, values)

    def _arguments(self, workflow_task: WorkflowTask, workflow_output: WorkflowOutput) -> dict[str, Any]:
        task = workflow_task.task
        answer = task.metadata.get(self.answer_key)
        completion = workflow_output.metadata.get(self.output_key)
        return {
            "completion": None if completion is None else str(completion),
            "answer": answer,
            "reference": "" if answer is None else reference_answer(answer),
            "question": task.main_query,
            "task": task,
            "metadata": task.metadata,
            "output_metadata": workflow_output.metadata,
            "workflow_task": workflow_task,
            "workflow_output": workflow_output,
        }

    async def _evaluate(self, name: str, fn: Any, arguments: dict[str, Any]) -> JudgeResult:
        try:
            if hasattr(fn, "compute_reward"):
                return await run_judge(fn, arguments["workflow_task"], arguments["workflow_output"])
            value = fn(**_select(fn, arguments))
            if inspect.isawaitable(value):
                value = await value
            if isinstance(value, bool):
                return JudgeResult(float(value), value)
            if isinstance(value, (int, float)):
                return JudgeResult(float(value), value > 0)
            return as_judge_result(value, fn)
        except Exception as error:
            raise RuntimeError(
                f"CompositeJudge component {name!r} failed: {type(error).__name__}: {error}"
            ) from error


def _as_component(name: str, spec: Any) -> Component:
    if isinstance(spec, Component):
        component = spec
    elif isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"Component {name!r}: give (fn, weight), got a tuple of {len(spec)}.")
        component = Component(spec[0], float(spec[1]))
    else:
        component = Component(spec)
    if not hasattr(component.fn, "compute_reward"):
        if not callable(component.fn):
            raise TypeError(f"Component {name!r} is {component.fn!r}: give a judge or a function.")
        _check_parameters(name, component.fn)
    return component


def _check_parameters(name: str, fn: Callable[..., Any]) -> None:
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if parameter.name not in ARGUMENTS and parameter.default is inspect.Parameter.empty:
            raise ValueError(
                f"Component {name!r}: parameter {parameter.name!r} of {getattr(fn, '__qualname__', fn)!r} is not "
                f"one a component can take; use any of {', '.join(ARGUMENTS)} (or **kwargs)."
            )
        if parameter.name in ARGUMENTS and parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ValueError(f"Component {name!r}: parameter {parameter.name!r} must not be positional-only.")


def _select(fn: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return arguments
    return {key: value for key, value in arguments.items() if key in parameters}
