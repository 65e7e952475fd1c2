"""A TCP proxy in front of a Kafka broker that notes which requests clients send.

The broker advertises the proxy's address, so every connection a client opens (bootstrap,
group coordinator, partition leader) goes through it. Bytes pass unchanged both ways; from
the client side the proxy reads each request's header (size, api key, version, correlation
id) to record its api key, in order, with the number of the connection it came on.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from counterpoint.infra.broker import broker_binary, broker_reachable, free_port, port_open

FETCH = 1
JOIN_GROUP = 11
SYNC_GROUP = 14
LEAVE_GROUP = 13


@dataclass(frozen=True)
class Request:
    connection: int  # connections are numbered in the order the proxy accepted them
    api_key: int


@dataclass
class Wiretap:
    upstream_host: str
    upstream_port: int
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def count(self, api_key: int, since_connection: int = 0) -> int:
        return sum(1 for r in self.requests
                   if r.api_key == api_key and r.connection > since_connection)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host,
                                                                 self.upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._requests(number, reader, up_writer),
                             _pipe(up_reader, writer), return_exceptions=True)

    async def _requests(self, number: int, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size_bytes = await reader.readexactly(4)
                (size,) = struct.unpack(">i", size_bytes)
                payload = await reader.readexactly(size)
                (api_key,) = struct.unpack(">h", payload[:2])
                self.requests.append(Request(number, api_key))
                writer.write(size_bytes + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tapped_broker() -> AsyncIterator[tuple[str, Wiretap]]:
    """A fresh embedded broker whose advertised address is a wiretap in front of it."""
    port = free_port()
    tap = Wiretap("127.0.0.1", port)
    tap_port = await tap.start()
    broker = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{tap_port}",
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    bootstrap = f"127.0.0.1:{tap_port}"
    try:
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise AssertionError("the broker did not listen within 20s")
            await asyncio.sleep(0.05)
        assert await broker_reachable(bootstrap, timeout_s=20), "the broker does not answer"
        yield bootstrap, tap
    finally:
        broker.kill()
        broker.wait()
        await tap.stop()
