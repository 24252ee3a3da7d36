"""The EnvService wire format: one pydantic model per request and response body, unknown fields rejected.

Endpoints (JSON bodies; every error answers `ErrorResponse` with the HTTP status below):

| method + path                     | request               | response                  |
|-----------------------------------|-----------------------|---------------------------|
| `GET  /health`                    |                       | `HealthResponse`          |
| `GET  /schema`                    |                       | JSON schema of each model |
| `GET  /envs`                      |                       | `EnvListResponse`         |
| `POST /sessions`                  | `CreateSessionRequest`| `CreateSessionResponse`   |
| `POST /sessions/{id}/reset`       | `ResetRequest`        | `ResetResponse`           |
| `POST /sessions/{id}/step`        | `StepRequest`         | `StepResponse`            |
| `POST /sessions/{id}/truncate`    | `TruncateRequest`     | `StepResponse`            |
| `DELETE /sessions/{id}`           |                       | `ReleaseResponse`         |
| `POST /tasks`                     | `TasksRequest`        | `TasksResponse`           |
| `POST /evaluate`                  | `EvaluateRequest`     | `agent_env.evaluation.EvalReport` |

Error statuses: 400 the env refused the call (`ValueError`, `TypeError`, ...; `error.type` names the exception),
404 unknown session (`SessionNotFound`, e.g. reaped after the idle timeout) or env id (`NameNotFound`),
403 an env id this server does not serve (`EnvNotServed`), 409 a call out of order (`RuntimeError`, e.g. step
before reset), 422 a body that does not match its model (`ValidationError`), 503 the session limit is reached
(`TooManySessions`), 500 a bug (`InternalError`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent_env.types import Task

__all__ = [
    "PROTOCOL_MODELS",
    "AssistantMessage",
    "CreateSessionRequest",
    "CreateSessionResponse",
    "EnvListResponse",
    "ErrorDetail",
    "ErrorResponse",
    "EvaluateRequest",
    "HealthResponse",
    "Observation",
    "ReleaseResponse",
    "ResetOptions",
    "ResetRequest",
    "ResetResponse",
    "StepRequest",
    "StepResponse",
    "TasksRequest",
    "TasksResponse",
    "ToolCallFunction",
    "ToolCallMessage",
    "TruncateRequest",
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolCallFunction(_Message):
    """The function part of an OpenAI tool call. `arguments` is passed on as sent (a JSON string or an object),
    so a malformed call reaches the agent as a parse error, exactly as with a local env."""

    name: str | None = None
    arguments: Any = "{}"


class ToolCallMessage(_Message):
    """One OpenAI tool call of an assistant message."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolCallFunction


class AssistantMessage(_Message):
    """A structured action: an OpenAI assistant message. The fields an OpenAI SDK `model_dump()` holds are
    accepted (and ignored beyond `content` and `tool_calls`); any other field is an error."""

    role: Literal["assistant"] = "assistant"
    content: str | list[Any] | None = None
    tool_calls: list[ToolCallMessage] | None = None
    name: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None
    audio: Any = None
    function_call: Any = None
    reasoning_content: str | None = None


class Observation(_Message):
    """What the workflow sent to the model: `AgentEnv`'s observation (absent optional keys are null here)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    call_id: str
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None


class CreateSessionRequest(_Message):
    """Make an env on the server: `agent_env.make(env_id, **env_kwargs)` (JSON-able kwargs only)."""

    env_id: str = Field(description="A registered env id this server serves, e.g. `agent_env/MathAgent-v0`.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the env's factory.")


class CreateSessionResponse(_Message):
    session_id: str
    env_id: str
    idle_timeout_s: float = Field(description="The session is released after this many seconds without a call.")


class ResetOptions(_Message):
    """`AgentEnv.reset`'s options; an unknown option is an error, as it is locally."""

    task: Task | None = None
    episode_id: str | None = None
    repeat_index: int | None = None


class ResetRequest(_Message):
    seed: int | None = None
    options: ResetOptions | None = None


class ResetResponse(_Message):
    observation: Observation
    info: dict[str, Any]


class StepRequest(_Message):
    action: str | AssistantMessage = Field(description="The completion text, or an assistant message.")


class StepResponse(_Message):
    observation: Observation
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]


class TruncateRequest(_Message):
    reason: str = Field(description="A truncating `TerminationReason`, e.g. `response_truncated`.")


class ReleaseResponse(_Message):
    session_id: str
    released: bool = Field(description="False when the session did not exist (already released or reaped).")


class TasksRequest(_Message):
    """A page of an env's task list for one split (the YAML's `env_service` task reader reads it)."""

    env_type: str = Field(description="An env id the server serves, or its name without the namespace (`MathAgent-v0`).")
    split: str = Field("train", description="Split name; passed to the env factory's `split` argument when it has one.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the env's factory.")
    offset: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=0, description="Most tasks to return; null: all from `offset`.")


class TasksResponse(_Message):
    env_id: str
    split: str
    total: int = Field(description="Number of tasks in the split.")
    offset: int
    tasks: list[Task]


class EvaluateRequest(_Message):
    """Run an eval server-side: the env's tasks of `split`, `k` episodes each, against an OpenAI-compatible endpoint."""

    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    endpoint: str = Field(description="Base URL of an OpenAI-compatible API, e.g. `http://127.0.0.1:8000/v1`.")
    model: str = Field("default", description="Model name sent to the endpoint.")
    api_key: str = Field("EMPTY", description="API key sent to the endpoint.")
    split: str = "validation"
    num_tasks: int | None = Field(None, ge=1, description="Evaluate only the first N tasks of the split.")
    k: int = Field(1, ge=1, description="Episodes per task; pass@k is reported for k up to this.")
    concurrency: int = Field(16, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)


class HealthResponse(_Message):
    status: Literal["ok"] = "ok"
    sessions: int
    max_sessions: int
    idle_timeout_s: float


class EnvListResponse(_Message):
    env_ids: list[str]


class ErrorDetail(_Message):
    type: str = Field(description="Exception name (`ValueError`, `RuntimeError`, `SessionNotFound`, ...).")
    message: str


class ErrorResponse(_Message):
    error: ErrorDetail


PROTOCOL_MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model
    for model in (
        CreateSessionRequest,
        CreateSessionResponse,
        ResetRequest,
        ResetResponse,
        StepRequest,
        StepResponse,
        TruncateRequest,
        ReleaseResponse,
        TasksRequest,
        TasksResponse,
        EvaluateRequest,
        HealthResponse,
        EnvListResponse,
        ErrorResponse,
    )
}
"""Every message of the protocol by name; `GET /schema` serves their JSON schemas."""
