"""The sandboxed `execute_python_code` tool for agentscope toolkits, and the switch that swaps agentscope's for it."""

# No `from __future__ import annotations` here: agentscope builds the tool schema from the real annotations
# of `code`. agentscope itself is imported only when a tool runs or the patch is installed (it takes seconds).

import asyncio
import importlib
import logging
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentscope.tool import ToolResponse

from agent_env.tools.python_sandbox import PythonSandbox, SandboxResult
from agent_env.tools.sandbox_config import SandboxConfig

__all__ = [
    "PythonToolPatch",
    "execute_python_code",
    "install_sandboxed_python_tool",
    "make_execute_python_code",
]

logger = logging.getLogger("agent_env")

PythonTool = Callable[[str], Awaitable["ToolResponse"]]

AGENTSCOPE_HOMES = ("agentscope.tool", "agentscope.tool._coding", "agentscope.tool._coding._python")
"""Modules through which agentscope exposes its `execute_python_code`; the patch replaces it in each."""

_TOOL_DOC = """Execute the given Python code and capture the return code, standard output and standard error.

Only what the code prints comes back, so `print` the results you need. Every call starts from scratch in a
new process with an empty working directory: no variables, files or imports carry over from earlier calls.
There is no network access, and the code is stopped after {timeout:g} seconds.

Args:
    code (`str`):
        The Python code to be executed.

Returns:
    `ToolResponse`:
        The return code, standard output and standard error of the executed code.
"""


def _tool_response(result: SandboxResult, sandbox: PythonSandbox) -> "ToolResponse":
    from agentscope.message import TextBlock
    from agentscope.tool import ToolResponse

    return ToolResponse(
        content=[TextBlock(type="text", text=result.tool_text())],
        metadata={
            "returncode": result.returncode,
            "timed_out": result.timed_out,
            "truncated": result.truncated,
            "duration_s": result.duration_s,
            "isolated": sandbox.status.isolated,
        },
    )


def make_execute_python_code(
    config: SandboxConfig | None = None, sandbox: PythonSandbox | None = None
) -> PythonTool:
    """Build an async tool `execute_python_code(code)` that runs `code` in the sandbox.

    Same name, docstring layout and result text as agentscope's `agentscope.tool.execute_python_code`, so
    `Toolkit.register_tool_function(tool)` gives the model the schema `{"code": string}`; the timeout and
    every limit come from `config` and are not in the schema. Pass `sandbox` to share one `PythonSandbox`
    (and its warm workers) between tools; otherwise one is built from `config`, which checks isolation now
    (a blocking probe of about 50 ms, once per process) and raises `SandboxUnavailableError` when there is none and `config.allow_unisolated` is off. The
    returned function has a `sandbox` attribute; `tool.sandbox.close()` stops its waiting workers.
    """
    if sandbox is None:
        sandbox = PythonSandbox(config)
    elif config is not None and config != sandbox.config:
        raise ValueError(
            "pass either `config` or a `sandbox` built from it, not a sandbox with another config"
        )
    bound = sandbox

    async def execute_python_code(code: str) -> "ToolResponse":
        return _tool_response(await bound.run(code), bound)

    execute_python_code.__doc__ = _TOOL_DOC.format(timeout=bound.config.timeout_s)
    execute_python_code.__qualname__ = "execute_python_code"
    execute_python_code.sandbox = bound  # type: ignore[attr-defined]
    return execute_python_code


_default_lock = threading.Lock()
_default_tool: PythonTool | None = None


def _default() -> PythonTool:
    global _default_tool
    with _default_lock:
        if _default_tool is None:
            _default_tool = make_execute_python_code(SandboxConfig())
        return _default_tool


async def execute_python_code(code: str) -> "ToolResponse":
    # The docstring (the model-facing description) is set below from _TOOL_DOC with the default timeout.
    # The first call builds the default sandbox, whose isolation probe blocks: keep it off the event loop.
    tool = _default_tool if _default_tool is not None else await asyncio.to_thread(_default)
    return await tool(code)


execute_python_code.__doc__ = _TOOL_DOC.format(timeout=SandboxConfig.model_fields["timeout_s"].default)


class _PatchState:
    """What the patch replaced, and how many `PythonToolPatch` handles keep it in place."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.originals: dict[str, Any] = {}
        self.tool: PythonTool | None = None
        self.config: SandboxConfig | None = None
        self.handles = 0


_state = _PatchState()


class PythonToolPatch:
    """A handle on the installed sandboxed tool; `uninstall()` (or leaving its `with` block) releases it.

    agentscope's own `execute_python_code` comes back when the last handle is released.
    """

    def __init__(self, tool: PythonTool, config: SandboxConfig) -> None:
        self.tool = tool
        self.config = config
        self._released = False

    def uninstall(self) -> None:
        """Release this handle (idempotent); the last release restores agentscope's tool everywhere it was."""
        with _state.lock:
            if self._released:
                return
            self._released = True
            _state.handles -= 1
            if _state.handles == 0:
                _restore_originals()

    def __enter__(self) -> "PythonToolPatch":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.uninstall()


def _restore_originals() -> None:
    for name, original in _state.originals.items():
        module = importlib.import_module(name)
        if getattr(module, "execute_python_code", None) is _state.tool:
            module.execute_python_code = original
    sandbox = getattr(_state.tool, "sandbox", None)
    if sandbox is not None:
        sandbox.close()
    _state.originals.clear()
    _state.tool = None
    _state.config = None
    logger.info("agentscope.tool.execute_python_code restored to agentscope's own (unsandboxed) tool")


def install_sandboxed_python_tool(config: SandboxConfig | None = None) -> PythonToolPatch:
    """Make agentscope's `execute_python_code` run in the sandbox, process-wide; returns a handle.

    How: the attribute `execute_python_code` of `agentscope.tool`, `agentscope.tool._coding` and
    `agentscope.tool._coding._python` is set to a tool from `make_execute_python_code(config)`. Code that
    looks the name up when it runs sees ours; that covers the tutorial's workflow, which does
    `from agentscope.tool import Toolkit, execute_python_code` inside `execute()` and registers it.

    Limits: a module that ran `from agentscope.tool import execute_python_code` at import time, before
    this call, keeps the original in its namespace, and a `Toolkit` that already registered the
    original keeps it; install before such imports or registrations. The patch is per process (other
    processes, e.g. Ray workers, need their own call). Our tool takes `code` only, so a direct Python call
    that passes agentscope's `timeout=` argument fails with a TypeError; the timeout is `config.timeout_s`.

    Idempotent: installing again with an equal config, or with `config=None`, returns a new handle on
    the installed tool (so an env that installs with no config keeps a config the user installed
    earlier); another config swaps the tool for one built from it, for every handle. `None` on a fresh
    process installs `SandboxConfig()`. The installation and each swap are logged once (logger
    "agent_env", with the isolation in force). Raises `SandboxUnavailableError` without isolation unless
    `config.allow_unisolated`. Reversible: `handle.uninstall()` or `with install_sandboxed_python_tool():`;
    agentscope's tool is restored when every handle is released.
    """
    with _state.lock:
        if config is None:
            config = _state.config if _state.config is not None else SandboxConfig()
        if _state.tool is None or _state.config != config:
            tool = make_execute_python_code(config)
            first = _state.tool is None
            for name in AGENTSCOPE_HOMES:
                module = importlib.import_module(name)
                if first:
                    _state.originals[name] = module.execute_python_code
                module.execute_python_code = tool
            previous = _state.tool
            _state.tool, _state.config = tool, config
            if previous is not None:
                previous.sandbox.close()  # type: ignore[attr-defined]
            logger.info(
                "agentscope.tool.execute_python_code %s the agent_env sandbox (timeout %gs, %s)",
                "now runs code in" if first else "reconfigured: still runs code in",
                config.timeout_s,
                tool.sandbox.status.describe(),  # type: ignore[attr-defined]
            )
        _state.handles += 1
        return PythonToolPatch(_state.tool, config)
