"""Which isolation the Python sandbox gets on this machine (`sandbox_status`), and the refusal when it gets none."""

from __future__ import annotations

import json
import os
import select
import threading
import time
from dataclasses import dataclass, field

from agent_env.tools.sandbox_config import SandboxConfig
from agent_env.tools.worker_process import WorkerProcess

__all__ = ["SandboxStatus", "SandboxUnavailableError", "check_isolation", "sandbox_status"]

READY_TIMEOUT_S = 30.0
"""How long a starting sandbox worker may take to report `ready` before it counts as failed."""

_status_lock = threading.Lock()
_cached_status: SandboxStatus | None = None


@dataclass(frozen=True)
class SandboxStatus:
    """The isolation a sandboxed snippet runs under.

    `isolated` is True only when all of these hold for a probe sandbox: PID, network, mount, IPC and UTS
    namespaces (so the process tree dies with its PID 1, the network is cut and the host's processes are
    invisible), an unprivileged uid of its own with no supplementary groups and `no_new_privs` (so
    RLIMIT_NPROC binds and host files are read as "other"), and a read-only root with a fresh tmpfs as
    the only writable place. `problems` says what failed when it is False.
    """

    isolated: bool
    namespaces: tuple[str, ...] = ()
    uid: int | None = None
    read_only_root: bool = False
    problems: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One line for logs: what is in force, or why nothing is."""
        if self.isolated:
            return (
                f"isolated: {'/'.join(self.namespaces)} namespaces, unprivileged uid {self.uid}, "
                f"read-only root with a private tmpfs, network cut, resource limits"
            )
        return (
            "NOT isolated (resource limits, scrubbed environment and process-group kill only): "
            + "; ".join(self.problems)
        )


class SandboxUnavailableError(RuntimeError):
    """The sandbox cannot isolate model-written code here, and the config does not allow running it anyway."""


def _probe() -> SandboxStatus:
    """Start one isolated worker, read what it reports, and stop it."""
    if os.geteuid() != 0:
        return SandboxStatus(
            isolated=False,
            problems=(
                f"the process runs as uid {os.geteuid()}, not root: creating PID/network/mount namespaces "
                "and switching each sandbox to an unprivileged uid of its own need root",
            ),
        )
    try:
        worker = WorkerProcess.spawn(SandboxConfig(), isolated=True)
    except OSError as exc:
        return SandboxStatus(isolated=False, problems=(f"could not start a sandbox worker: {exc}",))
    try:
        lines = _read_status_until_ready(worker, READY_TIMEOUT_S)
    finally:
        worker.close()
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind == "error":
            return SandboxStatus(isolated=False, problems=(rest,))
        if kind == "ready":
            report = json.loads(rest)
            ok = (
                report.get("mode") == "isolated"
                and report.get("uid", 0) != 0
                and report.get("read_only_root")
            )
            return SandboxStatus(
                isolated=bool(ok),
                namespaces=tuple(report.get("namespaces", ())),
                uid=report.get("uid"),
                read_only_root=bool(report.get("read_only_root")),
                problems=() if ok else (f"the probe sandbox reported {report}",),
            )
    return SandboxStatus(
        isolated=False,
        problems=(
            f"a probe sandbox did not report ready within {READY_TIMEOUT_S:g} s (status lines: {lines})",
        ),
    )


def _read_status_until_ready(worker: WorkerProcess, timeout_s: float) -> list[str]:
    """Blocking read of the status pipe until a `ready`/`error` line, end-of-file or the timeout."""
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while True:
        lines = buffer.decode(errors="replace").splitlines()
        complete = lines if buffer.endswith(b"\n") else lines[:-1]
        if any(line.startswith(("ready ", "error ")) for line in complete):
            return complete
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return complete
        readable, _, _ = select.select([worker.status_fd], [], [], remaining)
        if not readable:
            continue
        try:
            chunk = os.read(worker.status_fd, 1 << 16)
        except BlockingIOError:
            continue
        if not chunk:
            return lines
        buffer += chunk


def sandbox_status(refresh: bool = False) -> SandboxStatus:
    """The isolation sandboxes get on this machine, probed once per process (about 50 ms) and cached.

    Blocking; call it from a thread when an event loop must not stall. `refresh=True` probes again.
    """
    global _cached_status
    with _status_lock:
        if _cached_status is None or refresh:
            _cached_status = _probe()
        return _cached_status


def check_isolation(status: SandboxStatus, config: SandboxConfig) -> None:
    """Raise `SandboxUnavailableError` unless `status` is isolated or `config.allow_unisolated` is set."""
    if status.isolated or config.allow_unisolated:
        return
    raise SandboxUnavailableError(
        "Refusing to run model-written Python code without isolation: "
        + "; ".join(status.problems)
        + ". The sandbox needs root with permission to create namespaces (on Linux >= 5.12; in a container, "
        "e.g. `--cap-add SYS_ADMIN --security-opt seccomp=unconfined`, or `--privileged`). To run it anyway, "
        "set SandboxConfig(allow_unisolated=True): the code then still gets a scrubbed environment, resource limits, a fresh temp dir and a process-group "
        "kill, but it can read every file this user can read, use the network, signal this user's processes "
        "and leave behind processes that call setsid()."
    )
