"""A server run in a thread of this process, for a notebook, a test or a benchmark:
``with running(config) as served: ...`` (``served.url``, ``served.state``) — on a free loopback
port, ready when the block starts, stopped (running requests finished) when it ends."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Iterator

from ..errors import LmatlasError
from .state import ServerConfig, State


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    state: State  # its models, decode loop and settings


@contextlib.contextmanager
def running(config: ServerConfig | None = None, ready_within: float = 120.0) -> Iterator[Served]:
    """The server, while the block runs."""
    import uvicorn

    from .app import create_app

    config = config or ServerConfig()
    app = create_app(config)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, 0 if config.port == 8000 else config.port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="lmatlas-serve", daemon=True)
    thread.start()
    url = f"http://{config.host}:{port}"
    try:
        _wait_ready(url, app, ready_within)
        yield Served(url, app.state.lmatlas)
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def _wait_ready(url: str, app, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        state = app.state.lmatlas
        if state.status == "failed":
            raise LmatlasError(f"the server could not load its models: {state.message}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if json.loads(r.read())["status"] == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise LmatlasError(f"the server at {url} was not ready within {within:g} s")
