"""The math-verify worker process: reads JSON requests on stdin, answers one JSON line each on stdout.

`MathVerifier` runs this file as a script (``python -P verify_worker.py``), so it imports nothing but the
standard library and math-verify (importing `agent_env` would cost seconds per worker). Protocol: it first
writes ``{"ready": true}``; then for each ``{"gold": str, "answer": str}`` line (both already passed through
`clean_answer`) it writes ``{"equal": bool}`` or ``{"error": str}``. It exits when stdin closes or its
parent dies, and after `CPU_LIFETIME_S` seconds of CPU (the parent then starts a fresh one), so a worker
orphaned in an endless computation does not burn a core forever.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

CPU_LIFETIME_S = 600
"""CPU seconds after which the worker is ended by the kernel (RLIMIT_CPU)."""


def _parse(text: str) -> list:
    from math_verify import parse

    # Wrapped in $..$, LaTeX extraction handles \\frac, \\$ and such; the bare string lets the
    # plain-expression extractor take what LaTeX rejects.
    return parse(f"${text}$", parsing_timeout=None) or parse(text, parsing_timeout=None)


def compare(gold: str, answer: str) -> bool:
    """math-verify equivalence of `answer` with `gold`, with math-verify's (signal-based) timeouts off.

    Raises `ValueError` when the reference cannot be parsed.
    """
    from math_verify import verify

    gold_parsed = _parse(gold)
    if not gold_parsed:
        raise ValueError(f"math-verify could not parse the reference answer {gold!r}")
    answer_parsed = _parse(answer)
    return bool(answer_parsed) and bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def _end_with_parent() -> None:
    """Exit when the parent process goes away (checked each second), and cap this process's CPU time."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard == resource.RLIM_INFINITY or hard > CPU_LIFETIME_S:
            resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIFETIME_S, hard))
    except (ImportError, ValueError, OSError):  # not on this platform: the watchdog below still works
        pass
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    _end_with_parent()
    import math_verify  # noqa: F401  (import before announcing readiness: it takes ~2 s)

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    compare("1", "1")  # warm sympy's caches
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply: dict = {"equal": compare(request["gold"], request["answer"])}
        except Exception as error:  # a bad input is an answer, not a crash of the worker
            reply = {"error": f"{type(error).__name__}: {error}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
