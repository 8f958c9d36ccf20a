"""``python -m bench.loadgen``: a small HTTP/1.1 load generator, for machines without ``wrk``.

Raw asyncio sockets, keep-alive, a fixed number of connections each with one request in flight;
responses are counted over ``--seconds`` after ``--warmup``. Prints one JSON object:
``{"requests": …, "seconds": …, "errors": …}``. Only for servers on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
from dataclasses import dataclass


@dataclass
class Run:
    request: bytes
    running: bool = True
    responses: int = 0
    errors: int = 0


class Connection(asyncio.Protocol):
    """One keep-alive connection: sends the request again as soon as a response is complete."""

    def __init__(self, run: Run, closed: asyncio.Future[None]) -> None:
        self.run = run
        self.closed = closed
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("a stream transport was expected")
        self.transport = transport
        transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end]
            total = end + 4 + _content_length(head)
            if len(buffer) < total:
                break
            buffer = buffer[total:]
            self.run.responses += 1
            if head[9:12] != b"200":
                self.run.errors += 1
            if self.transport is not None:
                if self.run.running:
                    self.transport.write(self.run.request)
                else:
                    self.transport.close()
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _content_length(head: bytes) -> int:
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    start += len(b"\r\ncontent-length:")
    end = head.find(b"\r\n", start)
    return int(head[start : end if end >= 0 else None].strip())


async def load(
    port: int, path: str, cookie: str | None, connections: int, seconds: float, warmup: float
) -> dict[str, float]:
    headers = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/html"]
    if cookie:
        headers.append(f"Cookie: session={cookie}")
    run = Run(("\r\n".join(headers) + "\r\n\r\n").encode("ascii"))
    loop = asyncio.get_running_loop()
    closed: list[asyncio.Future[None]] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        await loop.create_connection(functools.partial(Connection, run, done), "127.0.0.1", port)
        closed.append(done)
    await asyncio.sleep(warmup)
    first, errors, started = run.responses, run.errors, loop.time()
    await asyncio.sleep(seconds)
    last, ended = run.responses, loop.time()
    run.running = False
    await asyncio.wait_for(asyncio.gather(*closed), timeout=10)
    return {
        "requests": last - first,
        "seconds": ended - started,
        "errors": run.errors - errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--cookie")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    result = asyncio.run(
        load(args.port, args.path, args.cookie, args.connections, args.seconds, args.warmup)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
