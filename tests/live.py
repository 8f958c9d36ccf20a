"""An ASGI app behind a real uvicorn server, in a thread of the test process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

START_TIMEOUT = 10.0


@contextlib.contextmanager
def served(app: ASGIApp) -> Iterator[str]:
    """Serves ``app`` (with its lifespan) on a free 127.0.0.1 port; yields its base URL and
    stops the server on the way out."""
    with served_by(lambda port: app) as url:
        yield url


@contextlib.contextmanager
def served_by(build: Callable[[int], ASGIApp]) -> Iterator[str]:
    """As :func:`served`, the app built by ``build`` for the port it is served on (an app whose
    settings name its own origin: WebAuthn's, ``http://localhost:<port>``)."""
    # Said to be TCP, so that asyncio turns Nagle's algorithm off (TCP_NODELAY) on the
    # connections it accepts, as on the sockets uvicorn binds itself: with proto 0 it does not,
    # and each response's second write waits for the client's delayed ACK, 40 ms a request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build(port), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, f"uvicorn did not start within {START_TIMEOUT} s"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()
