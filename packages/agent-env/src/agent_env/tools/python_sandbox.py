"""`PythonSandbox`: runs untrusted Python snippets, each in a fresh isolated process tree, from any event loop."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from agent_env.tools.isolation import READY_TIMEOUT_S, SandboxStatus, check_isolation, sandbox_status
from agent_env.tools.sandbox_config import SandboxConfig
from agent_env.tools.worker_process import RUN_HEADER, WorkerProcess

__all__ = ["PythonSandbox", "SandboxError", "SandboxResult"]

FAILED_RETURNCODE = -1
"""`returncode` of a snippet stopped by the timeout (agentscope's convention) or whose sandbox vanished."""
KILL_GRACE_S = 5.0
"""How long a killed sandbox may take to be gone before its launcher's process group is killed too."""
PIPE_GRACE_S = 1.0
"""How long to wait for stdout/stderr end-of-file once the sandbox is gone (leftovers of unisolated runs)."""


class SandboxError(RuntimeError):
    """A sandbox worker failed to start or vanished: an infrastructure fault, not the snippet's."""


@dataclass(frozen=True)
class SandboxResult:
    """What one snippet did. `returncode` is negative for a signal (-9: killed), -1 for the timeout."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    duration_s: float

    def tool_text(self) -> str:
        """The text agentscope's `execute_python_code` returns, in the same tags."""
        return f"<returncode>{self.returncode}</returncode><stdout>{self.stdout}</stdout><stderr>{self.stderr}</stderr>"


class _Capture:
    """Keeps the first and last bytes of a stream, enough for `max_chars` characters, and counts the rest."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._keep = 4 * max_chars  # UTF-8 needs at most 4 bytes a character
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self._keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self._keep:
                del self.tail[: -self._keep]

    def text(self) -> tuple[str, bool]:
        """The captured text, and whether it was truncated (then with a marker where bytes were left out)."""
        contiguous = self.total == len(self.head) + len(self.tail)
        if contiguous:
            whole = (self.head + self.tail).decode("utf-8", errors="replace")
            if len(whole) <= self.max_chars:
                return whole, False
            head_text, tail_text = whole, whole
        else:
            head_text = self.head.decode("utf-8", errors="replace")
            tail_text = self.tail[-self._keep :].decode("utf-8", errors="replace")
        head = head_text[: self.max_chars // 2]
        tail = tail_text[len(tail_text) - (self.max_chars - len(head)) :]
        omitted = self.total - len(head.encode()) - len(tail.encode())
        marker = f"\n[... truncated: {omitted} bytes not shown; output is limited to {self.max_chars} characters ...]\n"
        return head + marker + tail, True


class _Pump:
    """Reads a non-blocking pipe on `loop` into `sink` until end-of-file, which resolves `eof`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, sink: Callable[[bytes], None]) -> None:
        self._loop, self._fd, self._sink = loop, fd, sink
        self.eof: asyncio.Future[None] = loop.create_future()
        self._reading = True
        loop.add_reader(fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._sink(data)
            return
        self.stop()
        if not self.eof.done():
            self.eof.set_result(None)

    def stop(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)


class _StatusLines:
    """Parses the worker's status pipe: `pid N`, `ready {json}`, `error MESSAGE`, `exit RETURNCODE`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, worker: WorkerProcess) -> None:
        self._worker = worker
        self._init_pid: int | None = None
        self._buffer = b""
        self.ready: asyncio.Future[dict] = loop.create_future()
        self.errors: list[str] = []
        self.returncode: int | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            kind, _, rest = raw.decode(errors="replace").partition(" ")
            if kind == "pid":
                self._init_pid = int(rest)
            elif kind == "ready" and not self.ready.done():
                if self._init_pid is not None:  # PID 1 is alive now: it waits for the runner that wrote this
                    self._worker.set_init_pid(self._init_pid)
                self.ready.set_result(json.loads(rest))
            elif kind == "error":
                self.errors.append(rest)
            elif kind == "exit":
                self.returncode = int(rest)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _write_all(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
    """Write `data` to a non-blocking pipe without blocking the loop; stop quietly if the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _resolve, writable)
            try:
                await writable
            finally:
                loop.remove_writer(fd)
        except (BrokenPipeError, ConnectionResetError):
            return


async def _reaped(worker: WorkerProcess, timeout_s: float) -> None:
    """Wait (without blocking the loop) until the launcher, which has closed its status pipe, is a zombie reaped."""
    for _ in range(int(timeout_s / 0.001)):
        if worker.proc.poll() is not None:
            return
        await asyncio.sleep(0.001)


def _close_workers(idle: collections.deque[WorkerProcess]) -> None:
    while idle:
        idle.popleft().close()


def _close_spawned(started: Future[WorkerProcess]) -> None:
    if not started.cancelled() and started.exception() is None:
        started.result().close()


def _shutdown(idle: collections.deque[WorkerProcess], spawner: ThreadPoolExecutor) -> None:
    _close_workers(idle)
    spawner.shutdown(wait=False, cancel_futures=True)


class PythonSandbox:
    """Runs untrusted Python snippets: one fresh sandbox (a new process tree) per `run`, none reused.

    Construction checks isolation (`sandbox_status()`, probed once per process; pass `status` to use a
    known one) and raises `SandboxUnavailableError` when there is none and `config.allow_unisolated` is
    off. With `backend="warm"`, `config.warm_workers` sandboxes are kept started and waiting, each already
    isolated and limited with Python loaded; a `run` takes one and a background thread starts its
    replacement, so the call skips Python's start-up. `run` never blocks the event loop (processes are
    started on this sandbox's own spawner thread), and works from any loop and for any number of
    concurrent calls. `close()` (idempotent) stops the waiting workers; runs in progress finish and later
    runs start cold sandboxes. Garbage collection and interpreter exit stop everything.
    """

    def __init__(self, config: SandboxConfig | None = None, status: SandboxStatus | None = None) -> None:
        self.config = config if config is not None else SandboxConfig()
        self.status = status if status is not None else sandbox_status()
        check_isolation(self.status, self.config)
        self._isolated = self.status.isolated
        self._idle: collections.deque[WorkerProcess] = collections.deque()
        self._lock = threading.Lock()
        self._closed = False
        # One long-lived thread starts every worker: a worker dies with the thread that started it.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-env-sandbox-spawner")
        self._finalizer = weakref.finalize(self, _shutdown, self._idle, self._spawner)

    def close(self) -> None:
        """Stop the waiting workers and stop refilling the pool (idempotent)."""
        with self._lock:
            self._closed = True
            _close_workers(self._idle)

    def _spawn(self) -> WorkerProcess:
        return WorkerProcess.spawn(self.config, self._isolated)

    def _refill(self) -> None:
        while True:
            with self._lock:
                if self._closed or len(self._idle) >= self.config.warm_workers:
                    return
            worker = self._spawn()
            with self._lock:
                if self._closed:
                    worker.close()
                    return
                self._idle.append(worker)

    async def _take_worker(self) -> WorkerProcess:
        worker = None
        with self._lock:
            while self._idle and worker is None:
                candidate = self._idle.popleft()
                if candidate.alive():
                    worker = candidate
                else:
                    candidate.close()
        if worker is None:
            started = self._spawner.submit(self._spawn)
            try:
                worker = await asyncio.wrap_future(started)
            except asyncio.CancelledError:
                started.add_done_callback(_close_spawned)
                raise
        if self.config.backend == "warm" and not self._closed:
            self._spawner.submit(self._refill)
        return worker

    async def run(self, code: str) -> SandboxResult:
        """Run `code` as a script in a fresh sandbox and return what it did.

        Raises `SandboxError` if no sandbox could be started (twice in a row); the snippet's own failures
        (exceptions, signals, limits, the timeout) are results, never exceptions.
        """
        for attempt in range(2):
            worker = await self._take_worker()
            try:
                return await self._run_on(worker, code)
            except _WorkerVanished as exc:
                if attempt == 1:
                    raise SandboxError(f"a sandbox worker could not be started: {exc}") from None
            finally:
                worker.close()
        raise AssertionError("unreachable")

    async def _run_on(self, worker: WorkerProcess, code: str) -> SandboxResult:
        loop = asyncio.get_running_loop()
        status = _StatusLines(loop, worker)
        out, err = _Capture(self.config.max_output_chars), _Capture(self.config.max_output_chars)
        pumps = [_Pump(loop, worker.status_fd, status.feed)]
        try:
            await asyncio.wait(
                {status.ready, pumps[0].eof}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if not status.ready.done():
                raise _WorkerVanished("; ".join(status.errors) or "the worker exited before it was ready")
            self._check_report(status.ready.result())
            pumps += [_Pump(loop, worker.stdout_fd, out.feed), _Pump(loop, worker.stderr_fd, err.feed)]
            started = loop.time()
            timed_out = False
            try:
                await asyncio.wait_for(self._send(loop, worker, code, pumps[0].eof), self.config.timeout_s)
            except TimeoutError:
                timed_out = True
                worker.kill()
                done, _ = await asyncio.wait({pumps[0].eof}, timeout=KILL_GRACE_S)
                if not done:
                    worker.kill(whole_group=True)
            duration = loop.time() - started
            await asyncio.wait({pumps[1].eof, pumps[2].eof}, timeout=PIPE_GRACE_S)
            await _reaped(worker, PIPE_GRACE_S)
        finally:
            for pump in pumps:
                pump.stop()
        return self._result(status, out, err, timed_out, duration)

    @staticmethod
    async def _send(
        loop: asyncio.AbstractEventLoop, worker: WorkerProcess, code: str, gone: asyncio.Future[None]
    ) -> None:
        await _write_all(loop, worker.stdin_fd, RUN_HEADER + code.encode("utf-8", errors="replace"))
        assert worker.proc.stdin is not None
        worker.proc.stdin.close()
        await asyncio.shield(gone)

    def _check_report(self, report: dict) -> None:
        if self._isolated and (report.get("mode") != "isolated" or report.get("uid") == 0):
            raise SandboxError(f"a sandbox worker reported weaker isolation than expected: {report}")

    def _result(
        self, status: _StatusLines, out: _Capture, err: _Capture, timed_out: bool, duration: float
    ) -> SandboxResult:
        stdout, out_cut = out.text()
        stderr, err_cut = err.text()
        if timed_out:
            returncode = FAILED_RETURNCODE
            note = (
                f"TimeoutError: The code execution exceeded the timeout of {self.config.timeout_s:g} seconds."
            )
            stderr = f"{stderr}\n{note}" if stderr else note
        elif status.returncode is not None:
            returncode = status.returncode
        else:
            returncode = FAILED_RETURNCODE
            note = "SandboxError: the sandbox ended without reporting an exit status."
            stderr = f"{stderr}\n{note}" if stderr else note
        return SandboxResult(returncode, stdout, stderr, timed_out, out_cut or err_cut, round(duration, 4))


class _WorkerVanished(Exception):
    """A worker died or failed before it was ready; `run` retries once with a fresh one."""
