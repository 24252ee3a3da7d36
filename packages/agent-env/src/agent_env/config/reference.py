"""Reading the schema itself: type names, the field at a key path, and the Markdown reference of every key."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent_env.config.base import unused_reason

__all__ = ["KeyInfo", "block_at", "config_reference_markdown", "iter_keys", "type_label"]


@dataclass(frozen=True)
class KeyInfo:
    """One key of the schema: its dotted path, type, default (as YAML text) and meaning."""

    path: str
    type: str
    default: str
    description: str
    unused: str | None
    is_block: bool


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(get_args(annotation))
    return annotation, False


def block_type(annotation: Any) -> type[BaseModel] | None:
    """The block class a field holds (`X` or `X | None` with `X` a model), else None."""
    inner, _ = _strip_none(annotation)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


def type_label(annotation: Any) -> str:
    """A short human name of a field type, e.g. `int`, `str | null`, `"easy" | "mix"`, `list[str]`, `mapping`."""
    inner, nullable = _strip_none(annotation)
    suffix = " | null" if nullable else ""
    origin = get_origin(inner)
    if origin is Literal:
        label = " | ".join(json.dumps(v) for v in get_args(inner))
    elif origin is list:
        (item,) = get_args(inner) or (Any,)
        label = f"list[{type_label(item)}]"
    elif origin is dict or inner is dict:
        label = "mapping"
    elif isinstance(inner, type) and issubclass(inner, BaseModel):
        label = "block"
    elif inner is Any:
        label = "any"
    elif isinstance(inner, type):
        label = inner.__name__
    else:
        label = str(inner)
    return label + suffix


def block_at(root: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The block class at key path `path` below `root` (`()` is `root`), or None where the path leaves the schema."""
    model: type[BaseModel] | None = root
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        model = block_type(model.model_fields[part].annotation)
    return model


def _default_text(field: FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if block_type(field.annotation) is not None and field.default is PydanticUndefined:
        return ""  # a block built from its own defaults
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    return json.dumps(value, ensure_ascii=False)


def iter_keys(model: type[BaseModel], prefix: str = "") -> Iterator[KeyInfo]:
    """Every key of `model` and its blocks, depth first, in declaration order."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        block = block_type(field.annotation)
        yield KeyInfo(
            path=path,
            type=type_label(field.annotation),
            default=_default_text(field),
            description=field.description or "",
            unused=unused_reason(model, name),
            is_block=block is not None,
        )
        if block is not None:
            yield from iter_keys(block, path)


def config_reference_markdown(root: type[BaseModel] | None = None) -> str:
    """A Markdown table of every config key: path, type, default and meaning (generated from the schema)."""
    if root is None:
        from agent_env.config.schema import AgentRLConfig

        root = AgentRLConfig
    lines = ["| Key | Type | Default | Meaning |", "|---|---|---|---|"]
    for key in iter_keys(root):
        meaning = key.description
        if key.unused:
            meaning += f" *Accepted, not used: {key.unused}.*"
        default = f"`{key.default}`" if key.default and key.default != "required" else key.default
        cells = [f"`{key.path}`", f"`{key.type}`", default, meaning]
        lines.append("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
