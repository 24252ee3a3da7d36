"""The base class of every config block, and how a key is marked "accepted, not used"."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["ConfigBlock", "UNUSED_MARK", "check_reference_syntax", "unused_reason"]

UNUSED_MARK = "accepted_not_used"
"""Key in a field's `json_schema_extra` whose value says why the key is accepted but ignored."""


class ConfigBlock(BaseModel):
    """A block of config keys: unknown keys are errors, assignments are validated, an empty block is `{}`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_block_is_default(cls, data: Any) -> Any:
        # YAML `rollout:` with every line under it commented out reads as null; treat it as an empty block.
        return {} if data is None else data


def unused_reason(model: type[BaseModel], field_name: str) -> str | None:
    """Why `field_name` of `model` is accepted but not used, or None for a key we use."""
    extra = model.model_fields[field_name].json_schema_extra
    if isinstance(extra, dict):
        reason = extra.get(UNUSED_MARK)
        return str(reason) if reason is not None else None
    return None


def check_reference_syntax(value: str | None) -> str | None:
    """Validate a `load_object` reference's syntax at load time (nothing is imported); None passes."""
    from agent_env.loading import LoadError, parse_spec

    if value is not None:
        try:
            parse_spec(value)
        except LoadError as exc:
            raise ValueError(str(exc)) from None
    return value
