"""`LoopbackServer`: an ASGI app served by uvicorn on a free 127.0.0.1 port, on a thread of the test process."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


class LoopbackServer:
    """uvicorn serving an ASGI app on a free loopback port, on a thread of this test process."""

    def __init__(self, app) -> None:
        self.app = app
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so (else ~40 ms per request)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the test server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
