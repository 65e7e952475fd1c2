"""The MCP client's HTTP/1.1 transport (agents/tools/http1.py) against a real socket server:
keep-alive reuse, a connection the server closed while idle, a body streamed as it arrives,
and httpx's errors for a refused connection and a response cut short."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest

from counterpoint.agents.tools.http1 import Http1Transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handle: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server on a free port; yields its base URL and a one-item list counting the
    connections it accepted."""
    accepted = [0]

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            await handle(reader, writer)
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        srv.close()


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's body (Content-Length framing); None when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return await reader.readexactly(length)


def reply(body: bytes, *, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (body := await read_request(reader)) is not None:
        writer.write(reply(b'{"echo": ' + body + b"}"))
        await writer.drain()


async def test_requests_share_one_kept_alive_connection() -> None:
    async with server(echo) as (url, accepted), httpx2.AsyncClient(
            transport=Http1Transport()) as client:
        for i in range(5):
            response = await client.post(url + "/mcp", content=str(i).encode())
            assert response.status_code == 200
            assert response.json() == {"echo": i}
        assert accepted[0] == 1


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        assert body is not None
        writer.write(reply(body))  # keep-alive offered, then closed (an idle timeout)
        await writer.drain()

    async with server(once) as (url, accepted), httpx2.AsyncClient(
            transport=Http1Transport()) as client:
        assert (await client.post(url, content=b"1")).json() == 1
        await asyncio.sleep(0.1)  # the close reaches this side
        assert (await client.post(url, content=b"2")).json() == 2
        assert accepted[0] == 2


async def test_connection_close_from_the_server_is_honoured() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (body := await read_request(reader)) is not None:
            writer.write(reply(body, close=True))
            await writer.drain()
            return

    async with server(closing) as (url, accepted), httpx2.AsyncClient(
            transport=Http1Transport()) as client:
        for i in range(3):
            assert (await client.post(url, content=str(i).encode())).json() == i
        assert accepted[0] == 3


async def test_a_chunked_body_is_read_as_it_arrives() -> None:
    second = asyncio.Event()

    async def events(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await second.wait()  # the client must see the first event before this one exists
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()

    async with server(events) as (url, _), httpx2.AsyncClient(
            transport=Http1Transport()) as client:
        async with client.stream("POST", url, content=b"{}") as response:
            chunks = []
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                second.set()
        assert b"".join(chunks) == b"data: 1data: 2"
        assert chunks[0] == b"data: 1"


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with server(echo) as (url, _):
        pass  # closed: nothing listens on its port now
    async with httpx2.AsyncClient(transport=Http1Transport()) as client:
        with pytest.raises(httpx2.ConnectError):
            await client.post(url, content=b"1")


async def test_a_response_cut_short_is_a_protocol_error_and_the_connection_is_dropped() -> None:
    calls = [0]

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (body := await read_request(reader)) is not None:
            calls[0] += 1
            if calls[0] == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"par")
                await writer.drain()
                return
            writer.write(reply(body))
            await writer.drain()

    async with server(cut) as (url, accepted), httpx2.AsyncClient(
            transport=Http1Transport()) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.post(url, content=b"1")
        assert (await client.post(url, content=b"2")).json() == 2
        assert accepted[0] == 2


async def test_a_slow_response_times_out_as_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with server(silent) as (url, _), httpx2.AsyncClient(
            transport=Http1Transport(), timeout=httpx2.Timeout(5, read=0.2)) as client:
        with pytest.raises(httpx2.ReadTimeout):
            await client.post(url, content=b"1")


async def test_a_kept_alive_connection_closed_as_the_request_went_out_is_tried_once_anew(
) -> None:
    # The server's idle timeout racing a request: it closes the connection on reading the
    # second request, without answering. That request goes again on a new connection.
    async def one_per_connection(reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        assert body is not None
        writer.write(reply(body))
        await writer.drain()
        await read_request(reader)  # read, never answered: the connection just closes

    async with server(one_per_connection) as (url, accepted), httpx2.AsyncClient(
            transport=Http1Transport()) as client:
        assert (await client.post(url, content=b"1")).json() == 1
        assert (await client.post(url, content=b"2")).json() == 2
        assert accepted[0] == 2


async def test_a_new_connection_closed_without_an_answer_is_not_tried_again() -> None:
    # The server may have acted on a request it read: only a reused connection is retried.
    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with server(never) as (url, accepted), httpx2.AsyncClient(
            transport=Http1Transport()) as client:
        with pytest.raises(httpx2.RemoteProtocolError):
            await client.post(url, content=b"1")
        assert accepted[0] == 1
