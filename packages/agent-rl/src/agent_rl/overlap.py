"""`BackgroundRollout`: the next step's collection in a worker thread while the learner trains (one step stale).

With `ajet.trainer_common.max_staleness: 1` the trainer starts collecting step k+1's batch, with the weights
the engine holds (those of step k-1), right before it trains on step k's batch, and waits for that collection
to end before it loads step k's weights into the engine: the engine is only updated between collections. The
collection drives the trainer's event loop from this thread, so the main thread must leave that loop alone
until `wait()` has returned. The learner (and its collectives) stays in the main thread.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class BackgroundRollout(Generic[T]):
    """At most one collection in flight, run by `collect()` in a worker thread."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-rl-rollout")
        self._future: concurrent.futures.Future[T] | None = None
        self._version = -1

    @property
    def in_flight(self) -> bool:
        """A collection was started and its result not yet taken by `wait()`."""
        return self._future is not None

    def start(self, collect: Callable[[], T], weights_version: int) -> None:
        """Start `collect()` in the worker thread; `weights_version` (training steps behind the engine's weights)
        comes back with its result."""
        if self._future is not None:
            raise RuntimeError("a collection is already in flight; wait() for it before starting another.")
        self._version = weights_version
        self._future = self._executor.submit(collect)

    def wait(self) -> tuple[T, int, float]:
        """The collection's result, its `weights_version`, and the seconds this call blocked; re-raises its error."""
        if self._future is None:
            raise RuntimeError("no collection in flight; start() one first.")
        started = time.perf_counter()
        future, self._future = self._future, None
        result = future.result()
        return result, self._version, time.perf_counter() - started

    def close(self) -> None:
        """Wait for a collection in flight (its result is dropped) and stop the thread; safe to call twice."""
        if self._future is not None:
            concurrent.futures.wait([self._future])
            self._future = None
        self._executor.shutdown(wait=True)


__all__ = ["BackgroundRollout"]
