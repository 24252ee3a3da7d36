"""`MathVerifier`: math-verify's parse/verify in a pool of worker processes, with our own timeout.

math-verify guards itself with `signal.alarm`, which only works on a process's main thread and cannot interrupt
long C-level work (sympy raising ``9^{9^{9^{9}}}``). So comparisons run with math-verify's timeouts turned
off in `spawn`-started worker processes; a comparison that outlives its timeout gets `timed_out=True` and the
pool is killed and replaced (math-verify's state is per process, so nothing is lost but the start-up).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from agent_env.judges.answer_extraction import clean_answer

DEFAULT_TIMEOUT_S = 5.0
"""Seconds one comparison (parse both sides + verify) may take once a worker has it."""
STARTUP_TIMEOUT_S = 120.0
"""Seconds the worker processes may take to start and import math-verify (about 2 s each on a quiet CPU)."""


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of one comparison. `equal` is False whenever `timed_out` or `error` is set."""

    equal: bool
    timed_out: bool = False
    error: str | None = None


def _start_worker() -> None:
    """Worker initializer: import math-verify once and quiet its warning that its own timeout is off."""
    import math_verify  # noqa: F401

    logging.getLogger("math_verify").setLevel(logging.ERROR)


def _parse(text: str) -> list:
    from math_verify import parse

    cleaned = clean_answer(text)
    # Wrapped in $..$, LaTeX extraction handles \frac, \$ and words after a number; the bare string lets
    # the plain-expression extractor handle what LaTeX rejects (e.g. `5.0%`).
    return parse(f"${cleaned}$", parsing_timeout=None) or parse(text, parsing_timeout=None)


def compare_in_this_process(gold: str, answer: str) -> bool:
    """math-verify equivalence of `answer` with `gold`, with no timeout at all: runs in the worker processes.

    Both sides go through `clean_answer` and are parsed as LaTeX (``$..$``) with a plain-expression fallback.
    """
    from math_verify import verify

    gold_parsed = _parse(gold)
    if not gold_parsed:
        raise ValueError(f"math-verify could not parse the reference answer {gold!r}")
    answer_parsed = _parse(answer)
    if answer_parsed and verify(gold_parsed, answer_parsed, timeout_seconds=None):
        return True
    from math_verify import parse

    plain = parse(answer, parsing_timeout=None)
    return bool(plain) and bool(verify(gold_parsed, plain, timeout_seconds=None))


class MathVerifier:
    """Compares answers with math-verify in worker processes, with a per-comparison timeout.

    Thread-safe; `averify` never blocks the event loop. Workers start lazily on the first comparison (and
    again after a timeout killed them). At most `max_workers` comparisons run at once; a comparison's
    timeout starts when a worker is free for it, so a queue of comparisons does not time out by waiting.

    Args:
        timeout_s: default seconds per comparison (see `DEFAULT_TIMEOUT_S`).
        max_workers: worker processes; default ``min(4, os.cpu_count())``.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, max_workers: int | None = None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}.")
        self.timeout_s = timeout_s
        self.max_workers = max_workers or min(4, os.cpu_count() or 1)
        self._lock = threading.Lock()
        self._processes: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None

    def verify(self, gold: str, answer: str, timeout_s: float | None = None) -> VerifyResult:
        """Blocking comparison of `answer` with `gold` (use `averify` from async code)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        for attempt in range(2):
            pool = self._process_pool()
            future: Future = pool.submit(compare_in_this_process, gold, answer)
            try:
                return VerifyResult(equal=bool(future.result(timeout=timeout)))
            except FutureTimeoutError:
                self._discard(pool)
                return VerifyResult(equal=False, timed_out=True)
            except BrokenProcessPool:
                # Another comparison timed out and killed this pool under us: retry once on a fresh pool.
                self._discard(pool)
                if attempt == 1:
                    raise
            except Exception as error:  # math-verify's own failure on this input: a wrong answer, noted
                return VerifyResult(equal=False, error=f"{type(error).__name__}: {error}")
        raise AssertionError("unreachable")

    async def averify(self, gold: str, answer: str, timeout_s: float | None = None) -> VerifyResult:
        """`verify` on one of this verifier's threads, awaited; the event loop stays free."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread_pool(), self.verify, gold, answer, timeout_s)

    def close(self) -> None:
        """Stop the workers (a later comparison starts new ones). Safe to call twice."""
        with self._lock:
            processes, self._processes = self._processes, None
            threads, self._threads = self._threads, None
        if processes is not None:
            _kill(processes)
        if threads is not None:
            threads.shutdown(wait=False)

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.max_workers, thread_name_prefix="math-verify")
            return self._threads

    def _process_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._processes is None:
                pool = ProcessPoolExecutor(
                    self.max_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker
                )
                # Start every worker now (each submit spawns one while none is idle) and wait until each has
                # imported math-verify, so that start-up does not count against a comparison's timeout.
                warm_ups = [pool.submit(compare_in_this_process, "1", "1") for _ in range(self.max_workers)]
                try:
                    for warm_up in warm_ups:
                        warm_up.result(timeout=STARTUP_TIMEOUT_S)
                except Exception as error:
                    _kill(pool)
                    raise RuntimeError(
                        f"math-verify worker processes failed to start within {STARTUP_TIMEOUT_S:.0f} s "
                        f"({type(error).__name__}: {error}); check that `math-verify` is installed and importable."
                    ) from error
                self._processes = pool
            return self._processes

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._processes is pool:
                self._processes = None
        _kill(pool)


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's workers (a hung one cannot be stopped otherwise) and release the pool."""
    kill_workers = getattr(pool, "kill_workers", None)  # Python >= 3.14
    if kill_workers is not None:
        kill_workers()
    else:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide `MathVerifier` that judges share unless given their own (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
        return _default
