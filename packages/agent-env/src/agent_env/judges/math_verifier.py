"""`MathVerifier`: math-verify comparisons in a pool of worker processes, with our own timeout.

math-verify guards itself with `signal.alarm`, which only works on a process's main thread and cannot interrupt
long C-level work (sympy raising ``9^{9^{9^{9}}}``). So comparisons run, with math-verify's timeouts off, in
worker processes (`verify_worker.py`, after `clean_answer` here); one that outlives its timeout gets ``timed_out=True`` and
only its worker is killed and later replaced. Workers are plain subprocesses rather than `multiprocessing`
children, so the caller's ``__main__`` is never re-imported in them (a script without an
``if __name__ == "__main__"`` guard, or code piped to ``python -``, works).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent_env.judges.answer_extraction import clean_answer

DEFAULT_TIMEOUT_S = 5.0
"""Seconds one comparison (parse both sides + verify) may take once a worker has it."""
STARTUP_TIMEOUT_S = 120.0
"""Seconds a worker may take to start and import math-verify (about 2 s on a quiet CPU)."""


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of one comparison. `equal` is False whenever `timed_out` or `error` is set."""

    equal: bool
    timed_out: bool = False
    error: str | None = None


class _Worker:
    """One `verify_worker` subprocess, used by one thread at a time."""

    def __init__(self) -> None:
        # -P: the script's folder (which holds this package's `math.py`) must not shadow the stdlib.
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).with_name("verify_worker.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._buffer = b""
        reply = self._read_reply(STARTUP_TIMEOUT_S)
        if reply != {"ready": True}:
            self.kill()
            raise RuntimeError(
                f"The math-verify worker did not start within {STARTUP_TIMEOUT_S:.0f} s (got {reply!r}); "
                f"check that `math-verify` is installed: {sys.executable} -c 'import math_verify'."
            )

    def request(self, gold: str, answer: str, timeout_s: float) -> dict | None:
        """Send one comparison; its reply, or None on timeout. Raises `EOFError` if the worker died."""
        assert self.process.stdin is not None
        request = {"gold": clean_answer(gold), "answer": clean_answer(answer)}
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        return self._read_reply(timeout_s)

    def _read_reply(self, timeout_s: float) -> dict | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(
                    f"the math-verify worker (pid {self.process.pid}) exited with {self.process.poll()}"
                )
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


class MathVerifier:
    """Compares answers with math-verify in worker processes, with a per-comparison timeout.

    Thread-safe; `averify` never blocks the event loop. Workers start lazily (each takes ~2 s to import
    math-verify, not counted against any timeout) and are reused; a comparison's timeout starts when a worker
    has it, so comparisons waiting for a free worker do not time out by waiting. A timed-out worker is killed;
    the others keep running.

    Args:
        timeout_s: default seconds per comparison (see `DEFAULT_TIMEOUT_S`).
        max_workers: worker processes at most; default ``min(4, os.cpu_count())``.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, max_workers: int | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}.")
        self.timeout_s = timeout_s
        self.max_workers = max_workers or min(4, os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._threads: ThreadPoolExecutor | None = None

    def verify(self, gold: str, answer: str, timeout_s: float | None = None) -> VerifyResult:
        """Blocking comparison of `answer` with the reference `gold` (use `averify` from async code)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        with self._slots:
            for attempt in range(2):
                try:
                    worker = self._idle.get_nowait()
                except queue.Empty:
                    worker = _Worker()
                try:
                    reply = worker.request(gold, answer, timeout)
                except (EOFError, OSError) as error:
                    # The worker died (e.g. it reached its CPU lifetime): retry once on a fresh one.
                    worker.kill()
                    if attempt == 0:
                        continue
                    return VerifyResult(equal=False, error=f"{type(error).__name__}: {error}")
                if reply is None:
                    worker.kill()
                    return VerifyResult(equal=False, timed_out=True)
                self._idle.put(worker)
                break
        if "error" in reply:
            return VerifyResult(equal=False, error=reply["error"])
        return VerifyResult(equal=bool(reply["equal"]))

    async def averify(self, gold: str, answer: str, timeout_s: float | None = None) -> VerifyResult:
        """`verify` on one of this verifier's threads, awaited; the event loop stays free."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread_pool(), self.verify, gold, answer, timeout_s)

    def close(self) -> None:
        """Stop the idle workers and the threads (a later comparison starts new ones). Safe to call twice."""
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                break
        with self._lock:
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.max_workers, thread_name_prefix="math-verify")
            return self._threads


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide `MathVerifier` that judges share unless given their own (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
        return _default
