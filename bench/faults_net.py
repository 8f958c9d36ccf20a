"""Network faults on demand, for the tests and the soak: a TCP proxy whose connections can be
cut, frozen, slowed or robbed of an answer, and a ``redis-server`` of one's own that can be
stopped and started again (empty).

Both run on the caller's event loop and are plain asyncio: nothing here knows about pytest or
the benchmark suite, so ``tests/`` and ``python -m bench.soak`` share them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

# Every wait is bounded: a server coming up, a process or a connection going away.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
POLL_INTERVAL = 0.01
CHUNK = 65536


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def stop_process(process: asyncio.subprocess.Process | None) -> None:
    """Terminates ``process`` and waits for it, killing it if it does not exit within
    ``STOP_TIMEOUT``; nothing if there is none or it has exited."""
    if process is None or process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
    except TimeoutError:
        process.kill()
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT)


# -- the proxy ---------------------------------------------------------------------------------


class FaultProxy:
    """Forwards a free local port (``port``, once started) to ``target``, byte for byte, until a
    fault is asked for:

    - ``cut()``: the network fails. Every connection is closed at once (reset), and each new one
      as soon as it is accepted, until ``restore()``. A connection that was being made to the
      target when the cut came is closed as soon as it is made.
    - ``freeze()``: the server stops answering, the connections staying up. No byte passes
      either way on any connection, and new connections are accepted but held, not forwarded,
      until ``thaw()``; then everything held flows on.
    - ``latency`` (seconds, 0 for none): a slow network or a slow server; every chunk passed on,
      either way, waits that long first.
    - ``lose_next_reply()``: the network fails after the server did the work. The server's next
      answer (the next chunk from the target, on whichever connection) is not passed on, and
      every connection is closed.

    With ``target`` ``None`` there is no server behind: every connection is accepted and never
    answered, for good (until the client gives up, or a ``cut()`` or ``close()``).

    When one side of a connection closes, the other is closed at once as well (reset, as a
    network drops a connection), never left half open.
    """

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.port = 0
        self.latency = 0.0
        self._server: asyncio.Server | None = None
        self._cut = False
        self._closing = False
        self._lose_reply = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        # Every connection's ends, ours to the client and to the server, to close on a fault.
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self._cut = True
        self._abort_all()

    def restore(self) -> None:
        self._cut = False

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def lose_next_reply(self) -> None:
        self._lose_reply = True

    async def close(self) -> None:
        """Stops accepting and closes every connection; each handler then ends by itself (one
        cancelled would be logged by asyncio's server as an error). A handler still running
        after ``STOP_TIMEOUT`` is a bug of the proxy: an ``AssertionError``."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        self._flowing.set()  # what was held goes on, to find its connection closed
        self._abort_all()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=STOP_TIMEOUT)
        assert not self._handlers, "a connection of the proxy did not close"
        if self._server is not None:
            await asyncio.wait_for(self._server.wait_closed(), STOP_TIMEOUT)

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def _stopped(self) -> bool:
        return self._cut or self._closing

    async def _serve(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        # The client's end is known from the start: a cut or a close reaches a connection
        # still held by a freeze, or one with no server behind.
        ends = {client}
        self._writers.add(client)
        try:
            if self._stopped():
                return
            if self.target is None:
                await client_in.read()  # reads until the client gives up, answers nothing
                return
            await self._flowing.wait()
            if self._stopped():
                return
            server_in, server = await asyncio.open_connection(*self.target)
            ends.add(server)
            self._writers.add(server)
            if self._stopped():  # cut (or closed) while this connection was being made
                return
            await asyncio.gather(
                self._pipe(client_in, server, reply=False),
                self._pipe(server_in, client, reply=True),
            )
        except OSError:  # the target refused, or the client reset the connection
            pass
        finally:
            for writer in ends:
                writer.transport.abort()
            self._writers -= ends
            self._handlers.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, reply: bool
    ) -> None:
        """Passes what ``reader`` gets on to ``writer`` (``reply``: from the server to the
        client) until either end closes; then closes ``writer`` too. Never raises OSError: a
        reset is how a connection ends here."""
        try:
            while data := await reader.read(CHUNK):
                await self._flowing.wait()
                if self.latency:
                    await asyncio.sleep(self.latency)
                if reply and self._lose_reply:
                    self._lose_reply = False
                    self._abort_all()
                    return
                writer.write(data)
                await writer.drain()
        except OSError:  # the other end, a cut() or a close() reset the connection
            pass
        finally:
            writer.transport.abort()


@contextlib.asynccontextmanager
async def running_proxy(target: tuple[str, int] | None) -> AsyncIterator[FaultProxy]:
    """A started :class:`FaultProxy` to ``target``, closed on the way out."""
    proxy = FaultProxy(target)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


# -- Redis -------------------------------------------------------------------------------------


class RedisServerError(RuntimeError):
    """The ``redis-server`` could not be started: its message says why (and where its log is)."""


class RedisServerMissing(RedisServerError):
    """There is no ``redis-server`` executable on the ``PATH``."""


class RedisServer:
    """A ``redis-server`` of one's own on a free port of 127.0.0.1, without persistence: stopped
    and started again, it comes back empty (as a Redis whose failure counts were lost), on the
    same port. Its output goes to ``redis.log`` in ``folder`` (appended to at each start).

    Raises :class:`RedisServerMissing` at once when ``redis-server`` is not installed, and
    :class:`RedisServerError` from ``start()`` when it exits or does not answer ``PING`` within
    ``START_TIMEOUT``."""

    def __init__(self, folder: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisServerMissing("redis-server is not installed (apt-get install redis-server)")
        self.executable = executable
        self.port = free_port()
        self.log = folder / "redis.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Starts the server and returns once it answers ``PING``."""
        with self.log.open("ab") as output:
            process = await asyncio.create_subprocess_exec(
                self.executable,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        self._process = process
        deadline = time.monotonic() + START_TIMEOUT
        while not await self._answers():
            if process.returncode is not None:
                raise RedisServerError(
                    f"redis-server exited with {process.returncode}; the end of {self.log}:\n"
                    + self.log.read_text("utf-8", "replace")[-2000:]
                )
            if time.monotonic() > deadline:
                await self.stop()
                raise RedisServerError(
                    f"redis-server did not answer within {START_TIMEOUT} s; see {self.log}"
                )
            await asyncio.sleep(POLL_INTERVAL)

    async def stop(self) -> None:
        """Terminates the server (kills it if it does not exit in time); nothing if it is not
        running."""
        process, self._process = self._process, None
        await stop_process(process)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), 1
            )
        except OSError:  # refused, or TimeoutError
            return False
        try:
            writer.write(b"PING\r\n")
            return await asyncio.wait_for(reader.readline(), 1) == b"+PONG\r\n"
        except OSError:
            return False
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
