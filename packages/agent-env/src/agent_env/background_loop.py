"""One event loop on a daemon thread, for the sync methods of envs whose work is async (remote and Ray envs)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def run_in_background_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on the process-wide background loop and wait for its result.

    Works from plain code and from inside a running loop (e.g. Jupyter), and a thousand sync envs need no thousand
    threads. Do not call it from the background loop itself (it would wait on itself).
    """
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="agent-env-background-loop", daemon=True).start()
            _loop = loop
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()


class SyncFromAsync:
    """Gymnasium's sync `reset`/`step`/`truncate`/`close` for an env that implements their async twins
    (`areset`, `astep`, `atruncate`, `aclose`), run on the background loop."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        return run_in_background_loop(self.areset(seed=seed, options=options))

    def step(self, action: Any) -> Any:
        return run_in_background_loop(self.astep(action))

    def truncate(self, reason: Any) -> Any:
        return run_in_background_loop(self.atruncate(reason))

    def close(self) -> None:
        run_in_background_loop(self.aclose())
