"""`WorkerProcess`: one started sandbox worker (see `sandbox_worker.py`) as the host sees it: a process and its pipes."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from agent_env.tools.sandbox_config import SandboxConfig

__all__ = ["RUN_HEADER", "SANDBOX_WORKDIR", "WorkerProcess", "sandbox_environment"]

WORKER_SCRIPT = Path(__file__).with_name("sandbox_worker.py")
RUN_HEADER = b"RUN\n"
"""What precedes the source on the worker's stdin; a worker that reads anything else exits without running."""
SANDBOX_WORKDIR = "/tmp"
"""The snippet's working directory and HOME inside an isolated sandbox (a fresh tmpfs per call)."""

TMPFS_FILES = 4
"""The sandbox's tmpfs holds this many files of the largest allowed size (`file_size_mb`)."""

_uid_counter = itertools.count()


def sandbox_environment(home: str) -> dict[str, str]:
    """The whole environment of a sandboxed snippet: nothing is inherited from the host process.

    Thread-count variables keep numerical libraries from starting a thread per core, which would count
    against `max_processes`; `USER`/`LOGNAME` let `getpass.getuser()` work for a uid with no passwd entry.
    """
    return {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "PYTHONUTF8": "1",
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _sandbox_uid_range() -> tuple[int, int]:
    """`(first, count)` of uids to give sandboxes: unused, unprivileged, and mapped in this user namespace."""
    best = (0, 0, 0)
    try:
        lines = Path("/proc/self/uid_map").read_text().splitlines()
    except OSError:
        lines = ["0 0 4294967295"]
    for line in lines:
        inside, _outside, count = (int(x) for x in line.split())
        if count > best[2]:
            best = (inside, _outside, count)
    inside, _, count = best
    first = inside + min(count // 2, 1_000_000_000)
    return first, max(0, min(inside + count - first - 1, 1 << 20))


def _next_sandbox_uid() -> int:
    """A uid for one sandbox; concurrent sandboxes get different uids, so RLIMIT_NPROC counts each alone."""
    first, count = _sandbox_uid_range()
    if count < 1:
        raise OSError("no spare uid is mapped in this user namespace to run sandboxes under")
    return first + (os.getpid() * 7919 + next(_uid_counter)) % count


class WorkerProcess:
    """A launched `sandbox_worker.py`: its launcher process, stdin/stdout/stderr pipes and status pipe.

    Pipes are non-blocking, so the caller reads and writes them from an event loop (`loop.add_reader`).
    `kill()` ends the sandbox; `close()` (idempotent) kills whatever still runs, closes the pipes,
    reaps the launcher and removes the host-side temp dir of an unisolated worker.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], status_fd: int, isolated: bool, tmpdir: str | None
    ) -> None:
        self.proc = proc
        self.status_fd = status_fd
        self.isolated = isolated
        self._tmpdir = tmpdir
        self._init_pidfd: int | None = None
        self._closed = False
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.stdin_fd = proc.stdin.fileno()
        self.stdout_fd = proc.stdout.fileno()
        self.stderr_fd = proc.stderr.fileno()
        for fd in (self.stdin_fd, self.stdout_fd, self.stderr_fd, self.status_fd):
            os.set_blocking(fd, False)

    @classmethod
    def spawn(cls, config: SandboxConfig, isolated: bool) -> WorkerProcess:
        """Start a worker (it isolates itself, then waits for code); returns at once, without waiting for it."""
        tmpdir = None if isolated else tempfile.mkdtemp(prefix="agent-env-sandbox-")
        workdir = SANDBOX_WORKDIR if isolated else tmpdir
        assert workdir is not None
        status_r, status_w = os.pipe()
        spec = {
            "mode": "isolated" if isolated else "unisolated",
            "uid": _next_sandbox_uid() if isolated else os.getuid(),
            "workdir": workdir,
            "tmp_bytes": TMPFS_FILES * config.file_size_mb << 20,
            "status_fd": status_w,
            "host_pid": os.getpid(),
            "preload": list(config.preload_modules) if config.backend == "warm" else [],
            "limits": {
                "as_bytes": config.memory_mb << 20,
                "cpu_s": config.cpu_s,
                "fsize_bytes": config.file_size_mb << 20,
                "nproc": config.max_processes,
            },
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-u", str(WORKER_SCRIPT), json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_w,),
                env=sandbox_environment(workdir),
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            os.close(status_r)
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        finally:
            os.close(status_w)
        return cls(proc, status_r, isolated, tmpdir)

    def alive(self) -> bool:
        """Whether the launcher still runs (a pooled worker can die, e.g. with the thread that started it)."""
        return not self._closed and self.proc.poll() is None

    def set_init_pid(self, pid: int) -> None:
        """Remember the sandbox's PID 1 (reported by the launcher) through a pidfd, so killing it is race-free."""
        if self._init_pidfd is None and self.alive():
            try:
                self._init_pidfd = os.pidfd_open(pid)
            except OSError:
                self._init_pidfd = None

    def kill(self, whole_group: bool = False) -> None:
        """End the sandbox now.

        Isolated: SIGKILL its PID 1; the kernel then kills the rest of the PID namespace and the launcher
        exits once all of it is gone (end-of-file on the status pipe). Unisolated, or `whole_group`:
        SIGKILL the launcher's process group (processes that called setsid() escape this).
        """
        if self._init_pidfd is not None and not whole_group:
            try:
                signal.pidfd_send_signal(self._init_pidfd, signal.SIGKILL)
                return
            except ProcessLookupError:
                return
            except OSError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """Kill what still runs, close every pipe, reap the launcher (in a thread if it lingers), clean up."""
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            self.kill()
            self.kill(whole_group=True)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        for fd in (self.status_fd, self._init_pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._init_pidfd = None
        if self.proc.poll() is None:
            threading.Thread(target=self.proc.wait, name="sandbox-reaper", daemon=True).start()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
