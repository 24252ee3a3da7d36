"""`SandboxConfig`: the limits and the backend of the sandboxed Python tool, documented once."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SandboxConfig"]


class SandboxConfig(BaseModel):
    """Limits and backend of `agent_env.tools.execute_python_code`.

    None of these reach the tool schema the model sees: the model passes `code` and nothing else.
    Every limit is per call; each call runs in a fresh process tree that is gone when the call returns.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Parameters that control how long a snippet may run
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Wall-clock seconds a snippet may run, counted from when its code is handed to the sandbox. "
        "On expiry the whole process tree is killed and the result has returncode -1 and a TimeoutError line "
        "in stderr (agentscope's wording).",
    )
    cpu_s: int = Field(
        default=30,
        gt=0,
        description="CPU seconds per process (RLIMIT_CPU); a process that uses them up is killed (SIGXCPU).",
    )

    # Parameters that control memory, disk and processes
    memory_mb: int = Field(
        default=1024,
        gt=0,
        description="Address space per process in MiB (RLIMIT_AS); an allocation beyond it raises MemoryError. "
        "Importing numpy needs about 300 MiB.",
    )
    file_size_mb: int = Field(
        default=64,
        gt=0,
        description="Largest file a snippet may write, in MiB (RLIMIT_FSIZE). The fresh tmpfs that holds its "
        "working directory (/tmp, also mounted on /var/tmp and /dev/shm) holds 4 times this in all; it counts "
        "against the host's memory while the call runs.",
    )
    max_processes: int = Field(
        default=64,
        gt=1,
        description="Processes and threads the snippet's uid may have at once (RLIMIT_NPROC); forks beyond it "
        "fail with BlockingIOError. Each isolated call runs under its own uid, so calls do not share this.",
    )

    # Parameters that control what the model reads back
    max_output_chars: int = Field(
        default=10_000,
        gt=0,
        description="Characters of stdout and of stderr (each) returned to the model. Longer output keeps its "
        "first and last halves around a visible `[... truncated: N bytes not shown ...]` marker.",
    )

    # Parameters that control isolation and the backend
    allow_unisolated: bool = Field(
        default=False,
        description="Run even where namespaces and a uid drop cannot be established (not root, or a container "
        "without CAP_SYS_ADMIN). The snippet then keeps the scrubbed environment, the resource limits, a fresh "
        "temp dir and the process-group kill, but it can read every file this user can read, use the network, "
        "signal this user's processes and leave behind processes that call setsid(). false: refuse with an error.",
    )
    backend: Literal["warm", "cold"] = Field(
        default="warm",
        description="`warm`: keep `warm_workers` sandboxes started and waiting, so a call does not pay Python's "
        "start-up; each still runs one snippet and exits. `cold`: start a sandbox per call.",
    )
    preload_modules: tuple[str, ...] = Field(
        default=(),
        description="Modules each warm worker imports (as the sandbox uid, under the limits) before it waits "
        "for code, e.g. `[numpy]`: a snippet importing them then skips that cost (about 0.2 s for numpy), while "
        "every call, whatever its code, pays the import's CPU and memory in its replacement worker. Modules "
        "that fail to import are skipped. Ignored by the `cold` backend.",
    )
    warm_workers: int = Field(
        default=2,
        ge=1,
        description="Sandboxes kept started and waiting with the `warm` backend. Concurrent calls beyond this "
        "start their own sandbox (cold) while the pool refills.",
    )
