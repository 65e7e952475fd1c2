"""A small HTTP/1.1 transport for the MCP client's plain-HTTP tool servers.

The MCP SDK's streamable-HTTP client sends every tool call through an `httpx2.AsyncClient`. Its
default transport (httpcore's connection pool over anyio streams) cost more CPU per call than
the rest of the call together: in the pipeline bench an investigator spent about a quarter of
its CPU there (py-spy), for one small JSON POST per tool call on a kept-alive connection. This
transport does the same exchange with `h11` (the HTTP/1.1 parser httpcore uses too) straight on
asyncio streams: idle keep-alive connections in a list, the request written with one write, the
response read as it arrives (streamed: an SSE body is read as it comes, never buffered whole).

Only `http://` URLs come here; anything else (https, a proxy) goes to httpx's own transport.
Errors are httpx's (`ConnectError`, `ReadError`, `WriteError`, `ReadTimeout`,
`RemoteProtocolError`), which the SDK and `McpServer` already handle. A connection is kept for
the next request only when its exchange finished cleanly; a call cancelled half-way, an error,
or a server that says `Connection: close` closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import h11
import httpx2

READ_CHUNK = 65_536
MAX_IDLE = 32  # idle connections kept per transport (one server, many calls in flight)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.CLIENT)
        self.reused = False  # kept alive from an earlier exchange
        self.received = False  # any byte of this exchange's response has arrived

    def usable(self) -> bool:
        # A kept-alive connection the server has closed meanwhile (its idle timeout) shows
        # as EOF already read by the event loop; reusing it would fail the request.
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def next_event(self, request: httpx2.Request, read_s: float | None) -> Any:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx2.RemoteProtocolError(str(exc), request=request) from exc
            if event is not h11.NEED_DATA:
                return event
            try:
                async with asyncio.timeout(read_s):
                    data = await self.reader.read(READ_CHUNK)
            except TimeoutError:
                raise httpx2.ReadTimeout("timed out reading the response",
                                         request=request) from None
            except OSError as exc:
                raise httpx2.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            self.received = self.received or bool(data)
            try:
                self.h11.receive_data(data)  # b"" = the server closed its side
            except h11.RemoteProtocolError as exc:
                raise httpx2.RemoteProtocolError(str(exc), request=request) from exc


class _Body(httpx2.AsyncByteStream):
    """The response body as it arrives; the connection goes back to the pool when it ends."""

    def __init__(self, transport: Http1Transport, conn: _Connection, request: httpx2.Request,
                 timeout: float | None) -> None:
        self.transport = transport
        self.conn = conn
        self.request = request
        self.timeout = timeout
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while not self.done:
                event = await self.conn.next_event(self.request, self.timeout)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.done = True
                elif isinstance(event, h11.ConnectionClosed):
                    raise httpx2.RemoteProtocolError("the server closed the connection before "
                                                     "the response ended", request=self.request)
        except BaseException:
            self._finish(keep=False)
            raise

    async def aclose(self) -> None:
        self._finish(keep=self.done)

    def _finish(self, *, keep: bool) -> None:
        conn, self.conn = self.conn, None  # type: ignore[assignment]
        if conn is not None:
            self.transport._release(conn, keep=keep)


class Http1Transport(httpx2.AsyncBaseTransport):
    """See the module doc. One per MCP connection (one server's URL)."""

    def __init__(self) -> None:
        self._idle: list[_Connection] = []
        self._fallback: httpx2.AsyncHTTPTransport | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.scheme != "http" or "proxy" in request.extensions:
            if self._fallback is None:
                self._fallback = httpx2.AsyncHTTPTransport()
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        while True:
            conn = await self._connection(request, timeouts.get("connect"))
            try:
                event = await self._exchange(conn, request, body, timeouts)
                break
            except (httpx2.RemoteProtocolError, httpx2.ReadError, httpx2.WriteError):
                self._release(conn, keep=False)
                # A kept-alive connection the server closed just as this request went out (its
                # idle timeout racing us): the server read none of it, so it goes once more,
                # on a new connection. On a new connection, or after any byte of a response,
                # the error stands: the request may have been acted on.
                if conn.reused and not conn.received:
                    continue
                raise
            except BaseException:
                self._release(conn, keep=False)
                raise
        return httpx2.Response(
            event.status_code, headers=event.headers,
            stream=_Body(self, conn, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/" + event.http_version,
                        "reason_phrase": event.reason})

    async def _exchange(self, conn: _Connection, request: httpx2.Request, body: bytes,
                        timeouts: dict[str, float | None]) -> Any:
        """Send the request; the response's head (h11.Response)."""
        wire = conn.h11.send(h11.Request(method=request.method, target=request.url.raw_path,
                                         headers=list(request.headers.raw))) or b""
        if body:
            wire += conn.h11.send(h11.Data(data=body)) or b""
        wire += conn.h11.send(h11.EndOfMessage()) or b""
        try:
            conn.writer.write(wire)
            async with asyncio.timeout(timeouts.get("write")):
                await conn.writer.drain()
        except TimeoutError:
            raise httpx2.WriteTimeout("timed out sending the request", request=request) from None
        except OSError as exc:
            raise httpx2.WriteError(str(exc) or type(exc).__name__, request=request) from exc
        while True:
            event = await conn.next_event(request, timeouts.get("read"))
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise httpx2.RemoteProtocolError("the server closed the connection without a "
                                                 "response", request=request)
            # h11.InformationalResponse (1xx): wait for the final one.

    async def _connection(self, request: httpx2.Request,
                          connect_s: float | None) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        url = request.url
        port = url.port or 80
        try:
            async with asyncio.timeout(connect_s):
                reader, writer = await asyncio.open_connection(url.host, port)
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"timed out connecting to {url.host}:{port}",
                                        request=request) from None
        except OSError as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return _Connection(reader, writer)

    def _release(self, conn: _Connection, *, keep: bool) -> None:
        reusable = (keep and not self._closed and len(self._idle) < MAX_IDLE
                    and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE)
        if reusable:
            try:
                conn.h11.start_next_cycle()
            except h11.LocalProtocolError:
                reusable = False
            conn.reused, conn.received = True, False
        if reusable and conn.usable():
            self._idle.append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._fallback is not None:
            await self._fallback.aclose()
