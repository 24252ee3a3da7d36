"""Reading a config file (YAML + dotted overrides), turning validation errors into `ConfigError`, and dumping it."""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent_env.config.reference import block_at, type_label
from agent_env.config.schema import AgentRLConfig

__all__ = ["ConfigError", "ConfigProblem", "apply_overrides", "dump_resolved", "load_config"]

_TYPE_ERRORS = {
    "int_parsing", "int_type", "int_from_float", "float_parsing", "float_type", "bool_parsing", "bool_type",
    "string_type", "list_type", "dict_type", "model_type", "model_attributes_type", "none_required",
}  # fmt: skip


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config: the dotted key path (`""` for the whole file), and what is wrong and what to do."""

    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.key} (line {self.line})" if self.line else self.key
        return f"{where}: {self.message}" if where else self.message


class ConfigError(ValueError):
    """An invalid config. `problems` lists each one; the message names the file and every problem on its own line."""

    def __init__(self, problems: Sequence[ConfigProblem], source: Path | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        origin = f"config file {source}" if source else "config"
        count = f"{len(self.problems)} problem" + ("s" if len(self.problems) != 1 else "")
        body = "\n".join("  " + str(p).replace("\n", "\n  ") for p in self.problems)
        super().__init__(f"Invalid {origin} ({count}):\n{body}")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> AgentRLConfig:
    """Read the YAML file at `path`, apply `overrides` (`ajet.rollout.temperature=0.5`, values read as YAML),
    validate, and record the file as the config's `config_path` (its directory is `base_dir`).

    Raises `ConfigError` for a missing or unreadable file, bad YAML (also a key given twice in one mapping),
    a malformed override, unknown keys, wrong types and failed cross-field checks.
    """
    source = Path(path).expanduser().resolve()
    if not source.is_file():
        what = "is a directory" if source.is_dir() else "does not exist"
        raise ConfigError([ConfigProblem("", f"{source} {what}; pass the path of a YAML config file.")])
    text = source.read_text(encoding="utf-8")
    raw = _parse_yaml(text, source)
    raw = apply_overrides(raw, overrides, source=source)
    config = validate_config(raw, source=source, overrides=overrides, key_lines=_key_lines(text))
    config.set_source(source)
    return config


def validate_config(
    raw: dict[str, Any],
    source: Path | None = None,
    overrides: Sequence[str] = (),
    key_lines: dict[tuple[str, ...], int] | None = None,
) -> AgentRLConfig:
    """Validate plain data as an `AgentRLConfig`, raising `ConfigError` with key paths and suggestions."""
    try:
        return AgentRLConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [p for error in exc.errors() for p in _problems(error, overrides, key_lines or {})]
        raise ConfigError(problems, source) from None


def apply_overrides(
    raw: dict[str, Any], overrides: Sequence[str], source: Path | None = None
) -> dict[str, Any]:
    """Return a copy of `raw` with each `dotted.key=value` set (value parsed as YAML; missing blocks created).

    A value for a text key stays text (`ajet.experiment_name=2024` is the string "2024"). Only the syntax is
    checked here; unknown keys fail validation like keys from the file.
    """
    result = _deep_copy(raw)
    for override in overrides:
        key, sep, value_text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(
                [
                    ConfigProblem(
                        "",
                        f"override {override!r} is not `dotted.key=value` (e.g. `ajet.rollout.temperature=0.5`).",
                    )
                ],
                source,
            )
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(
                [ConfigProblem(key, f"override value {value_text!r} is not valid YAML: {exc}")], source
            ) from None
        if _is_text_key(parts) and isinstance(value, int | float | bool):
            value = value_text.strip()
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(
                    [
                        ConfigProblem(
                            key,
                            f"override {override!r}: {prefix} is a {type(child).__name__}, not a block of keys.",
                        )
                    ],
                    source,
                )
            node = child
        node[parts[-1]] = value
    return result


def dump_resolved(config: AgentRLConfig, path: str | Path) -> Path:
    """Write the full resolved config (`config.to_yaml_dict()`) to `path` as YAML, atomically; return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    header = "# Resolved config: every key with the value used (defaults filled in).\n"
    if config.config_path is not None:
        header += (
            f"# Loaded from {config.config_path}; relative references resolve against {config.base_dir}.\n"
        )
    text = header + yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, allow_unicode=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _is_text_key(parts: Sequence[str]) -> bool:
    block = block_at(AgentRLConfig, parts[:-1])
    field = block.model_fields.get(parts[-1]) if block is not None else None
    return field is not None and type_label(field.annotation) in ("str", "str | null")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base constructor reports unhashable keys
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line}); YAML would keep only "
                    "the last one. Merge the two into one block.",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: Path) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem("", f"not valid YAML: {exc}")], source) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    "", f"the file must be a mapping with an `ajet:` block, not a {type(data).__name__}."
                )
            ],
            source,
        )
    return data


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line number (1-based) of every mapping key in the YAML text, by key path."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    lines[(*path, key_node.value)] = key_node.start_mark.line + 1
                    walk(value_node, (*path, key_node.value))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _deep_copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _deep_copy(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_deep_copy(value) for value in tree]
    return tree


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problems(
    error: Any, overrides: Sequence[str], key_lines: dict[tuple[str, ...], int]
) -> list[ConfigProblem]:
    """The problems one pydantic error stands for (a failed cross-field check may hold several)."""
    loc = tuple(error["loc"])
    key = _dotted(loc)
    str_loc = tuple(p for p in loc if isinstance(p, str))
    line = key_lines.get(str_loc)
    kind, value = error["type"], error.get("input")
    parent = block_at(AgentRLConfig, str_loc[:-1])
    name = str_loc[-1] if str_loc else ""
    field = parent.model_fields.get(name) if parent is not None else None

    if kind == "extra_forbidden":
        valid = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        where = _dotted(str_loc[:-1]) or "the top level"
        if close:
            message = f"unknown key. Did you mean `{close[0]}`? Rename it, or remove it."
        else:
            message = (
                f"unknown key; remove it or use one of the keys valid under {where}: {', '.join(valid)}."
            )
    elif kind == "missing":
        line = key_lines.get(str_loc[:-1])
        hint = f" ({field.description})" if field is not None and field.description else ""
        message = (
            f"required key is missing; add `{name}:` under {_dotted(str_loc[:-1]) or 'the top level'}.{hint}"
        )
    elif kind == "literal_error":
        choices = [str(c) for c in _literal_choices(error)]
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
        listed = ", ".join(f"`{c}`" for c in choices)
        message = f"{value!r} is not one of {listed}." + (f" Did you mean `{close[0]}`?" if close else "")
    elif kind in _TYPE_ERRORS:
        expected = (
            type_label(field.annotation) if field is not None and not isinstance(loc[-1], int) else None
        )
        expected = expected or error["msg"].removeprefix("Input should be ").removeprefix("a valid ")
        message = f"expected {expected}, got {value!r} ({type(value).__name__})."
        if kind == "string_type" and isinstance(value, int | float | bool):
            message += " Put the value in quotes to make it text."
        if kind in ("model_type", "model_attributes_type"):
            message = f"expected a block of keys (a mapping), got {value!r} ({type(value).__name__})."
    elif kind == "value_error":
        text = str(error["ctx"]["error"]) if "ctx" in error else error["msg"].removeprefix("Value error, ")
        if text.startswith("ajet."):  # cross-field checks: each line names its own key path
            return [ConfigProblem("", part) for part in re.split(r"\n(?=ajet\.)", text)]
        message = text
    else:
        message = f"{error['msg'].replace('Input should be', 'must be')}, got {value!r}."
    sources = _overrides_for(str_loc, overrides, message)
    if sources:
        message += f" (set by override {', '.join(f'`{s}`' for s in sources)})"
    return [ConfigProblem(key, message, line)]


def _literal_choices(error: Any) -> list[str]:
    expected = error.get("ctx", {}).get("expected", "")
    return [part.strip().strip("'") for part in expected.replace(" or ", ", ").split(",") if part.strip()]


def _overrides_for(loc: tuple[str, ...], overrides: Sequence[str], message: str) -> list[str]:
    """The overrides behind a problem at `loc`: the last one that set this key or a block above it; for a problem
    with a whole block (a check across its keys), those of its overrides whose key the message names, else all
    of them."""
    keyed = [(tuple(o.partition("=")[0].strip().split(".")), o) for o in overrides]
    for parts, override in reversed(keyed):
        if loc[: len(parts)] == parts:
            return [override]
    inside = [(parts, override) for parts, override in keyed if parts[: len(loc)] == loc]
    named = [override for parts, override in inside if re.search(rf"\b{re.escape(parts[-1])}\b", message)]
    return named or [override for _, override in inside]
