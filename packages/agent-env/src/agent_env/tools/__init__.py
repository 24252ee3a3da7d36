"""Tools for agents: `execute_python_code`, a drop-in for agentscope's that is safe for model-written code."""

from agent_env.tools.isolation import SandboxStatus, SandboxUnavailableError, check_isolation, sandbox_status
from agent_env.tools.python_sandbox import PythonSandbox, SandboxError, SandboxResult
from agent_env.tools.python_tool import (
    PythonToolPatch,
    execute_python_code,
    install_sandboxed_python_tool,
    make_execute_python_code,
)
from agent_env.tools.sandbox_config import SandboxConfig

__all__ = [
    "PythonSandbox",
    "PythonToolPatch",
    "SandboxConfig",
    "SandboxError",
    "SandboxResult",
    "SandboxStatus",
    "SandboxUnavailableError",
    "check_isolation",
    "execute_python_code",
    "install_sandboxed_python_tool",
    "make_execute_python_code",
    "sandbox_status",
]
