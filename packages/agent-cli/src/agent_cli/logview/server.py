"""The logview's HTTP server: a FastAPI app over a `RunReader`, served by uvicorn on a local port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_cli.logview.run_reader import RunReader, UnknownEpisode, UnknownStep

__all__ = ["DEFAULT_PORT", "LogviewServer", "create_app", "serve_logview", "start_logview"]

DEFAULT_PORT = 8765
"""Port `agent-rl logview` tries first; when it is taken, a free one is used instead (and printed)."""

STATIC_DIR = Path(__file__).parent / "static"


def create_app(run_dir: str | Path) -> Any:
    """The logview app of one run directory.

    Routes: `/` (the page), `/static/*`, and the JSON API the page reads: `/api/run` (name, model, steps),
    `/api/metrics` (rows of `metrics.jsonl`), `/api/step?name=step_N` (groups and episodes) and
    `/api/episode?step=step_N&episode_id=...` (conversation and tokens). Files are re-read on every request.
    """
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    reader = RunReader(run_dir)
    app = FastAPI(title=f"agent-rl logview: {reader.run_dir.name}", docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/run")
    def run() -> dict[str, Any]:
        return reader.summary()

    @app.get("/api/metrics")
    def metrics() -> list[dict[str, Any]]:
        return reader.metrics()

    @app.get("/api/step")
    def step(name: str = Query(...)) -> dict[str, Any]:
        try:
            return reader.step(name)
        except UnknownStep:
            raise HTTPException(404, f"no trajectories/{name}.jsonl in {reader.run_dir}") from None

    @app.get("/api/episode")
    def episode(step: str = Query(...), episode_id: str = Query(...)) -> dict[str, Any]:
        try:
            return reader.episode(step, episode_id)
        except UnknownStep:
            raise HTTPException(404, f"no trajectories/{step}.jsonl in {reader.run_dir}") from None
        except UnknownEpisode:
            raise HTTPException(404, f"no episode {episode_id!r} in {step}") from None

    return app


class LogviewServer:
    """A logview served from a background thread (for notebooks, tests and `--no-block`): `url`, `stop()`."""

    def __init__(self, server: Any, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the thread; safe to call twice."""
        self._server.should_exit = True
        self._thread.join(timeout_s)

    def __enter__(self) -> LogviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_logview(run_dir: str | Path, host: str = "127.0.0.1", port: int = 0, ready_timeout_s: float = 30.0) -> LogviewServer:
    """Serve the logview of `run_dir` from a daemon thread; return once it accepts connections.

    `port=0` picks a free port; `DEFAULT_PORT`, when taken, falls back to a free one. Raises `OSError` when
    the port cannot be bound, `RuntimeError` when the server does not come up within `ready_timeout_s`.
    """
    _check_run_dir(run_dir)
    sock = _bind(host, port)
    server = _uvicorn_server(run_dir)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="agent-rl-logview", daemon=True)
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the logview server for {run_dir} did not start within {ready_timeout_s:.0f} s")
        time.sleep(0.02)
    return LogviewServer(server, thread, _url(host, sock.getsockname()[1]))


def serve_logview(run_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                  announce: Callable[[str], None] = print) -> None:
    """Serve the logview of `run_dir` until Ctrl-C. `announce` gets the URL once the port is bound.

    When `port` is `DEFAULT_PORT` and taken, a free port is used; any other port that is taken raises `OSError`.
    """
    _check_run_dir(run_dir)
    sock = _bind(host, port)
    announce(_url(host, sock.getsockname()[1]))
    try:
        _uvicorn_server(run_dir).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the Ctrl-C it caught
        pass


def _check_run_dir(run_dir: str | Path) -> None:
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(
            f"{run_dir} is not a directory; pass a run directory such as launcher_record/<experiment> "
            "(written by `agent-rl train` or `agent-rl debug`)."
        )


def _uvicorn_server(run_dir: str | Path) -> Any:
    import uvicorn

    config = uvicorn.Config(create_app(run_dir), log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port`; `DEFAULT_PORT`, when taken, gives way to a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        if port != DEFAULT_PORT:
            sock.close()
            raise OSError(error.errno, f"cannot serve on {host}:{port} ({error.strerror}); pick another --port") from None
        sock.bind((host, 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"
