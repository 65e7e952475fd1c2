"""MCP servers as tool sources, through the official `mcp` SDK's client.

One `McpServer` per configured server, stdio (a command this process starts) or streamable
HTTP (a URL). `start` connects and lists the server's tools; a server that cannot start or
answer fails here, at the agent's start-up, naming the server. Each call

- has a timeout (the server's `timeout_s`): a call that takes longer raises `ToolTimeout`;
- on a connection that broke (the server died, the URL stopped answering) raises
  `ToolUnavailable`;

both retriable, so the bus retries the event within its bounds and dead-letters it with the
reason after. A broken connection is dropped, and the next call connects anew — for a stdio
server that is a restart of its process. A timed-out call drops its connection only when no
other call is using it (a server stuck on one call gets restarted; a slow but working server
shared by many calls is not torn down under them).

Which tools a model may call is configuration, not the server's say: a tool is read-only only
when the configuration lists it under `read_only` (MCP's `readOnlyHint` is a hint from the
server, which the protocol says not to trust). Configured `inject` arguments are removed from
the schema a model sees and added to every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx2
import mcp_types

from counterpoint.agents.tools.errors import (
    InvalidInput,
    ToolConfigError,
    ToolTimeout,
    ToolUnavailable,
)
from counterpoint.agents.tools.http1 import Http1Transport
from counterpoint.agents.tools.mcp_client import import_client
from counterpoint.agents.tools.registry import ToolReply

import_client()  # before any `mcp` import: without the SDK's server half (mcp_client.py)

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import (  # noqa: E402
    MCP_DEFAULT_SSE_READ_TIMEOUT,
    MCP_DEFAULT_TIMEOUT,
)
from mcp.shared.exceptions import MCPError  # noqa: E402

if TYPE_CHECKING:
    import jsonschema

log = logging.getLogger(__name__)

# Builds a connected-to-be client; tests hand in-process servers through it.
Connect = Callable[[], AbstractAsyncContextManager[Client]]


@dataclass(frozen=True)
class Endpoint:
    """Where a server is: a command to start (stdio) or a URL (streamable HTTP)."""

    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = None

    def describe(self) -> str:
        # Never the headers or environment: they hold the secrets.
        return self.url or " ".join([self.command or "", *self.args]).strip()


def _connector(endpoint: Endpoint) -> Connect:
    @contextlib.asynccontextmanager
    async def connect() -> AsyncIterator[Client]:
        async with AsyncExitStack() as stack:
            if endpoint.url is not None:
                # The SDK's client settings (create_mcp_http_client) over a lighter transport
                # (agents/tools/http1.py: httpcore's pool cost more CPU than the call).
                http = await stack.enter_async_context(httpx2.AsyncClient(
                    headers=dict(endpoint.headers or {}), transport=Http1Transport(),
                    timeout=httpx2.Timeout(MCP_DEFAULT_TIMEOUT, read=MCP_DEFAULT_SSE_READ_TIMEOUT)))
                target: Any = streamable_http_client(endpoint.url, http_client=http)
            else:
                assert endpoint.command is not None
                target = StdioServerParameters(command=endpoint.command,
                                               args=list(endpoint.args),
                                               env=dict(endpoint.env or {}), cwd=endpoint.cwd)
            # No read timeout here: the handshake is bounded by the caller (a server's start
            # may take a while), each tool call by its own timeout.
            yield await stack.enter_async_context(Client(target, cache=None))

    return connect


class McpServer:
    """One configured server: its connection, kept and renewed, and its tools."""

    def __init__(self, name: str, endpoint: Endpoint, *, timeout_s: float = 10.0,
                 connect_timeout_s: float = 30.0, read_only: frozenset[str] = frozenset(),
                 inject: Mapping[str, Any] | None = None, connect: Connect | None = None) -> None:
        self.name = name
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.read_only = read_only
        self.inject = dict(inject or {})
        self._connect = connect or _connector(endpoint)
        self._client: Client | None = None
        self._closing: asyncio.Event | None = None
        self._holder: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.connections = 0  # how many times it connected (a restart counts)
        self._in_flight: dict[int, int] = {}  # connection number -> calls using it

    async def start(self) -> list[McpTool]:
        """Connect and list the tools; `ToolConfigError` naming the server when it cannot.

        A server that is not answering yet (starting, restarting, or slow on a busy host) is
        tried again, with backoff, until `connect_timeout_s` has passed in all: agents that
        restart together must not give up on a shared server that is merely busy. A stdio
        command that cannot be run at all fails at once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout_s
        delay = 0.5
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    client = await self._connected()
                    listed = await client.list_tools()
                break
            except Exception as exc:
                await self.close()
                if not _cannot_run(exc) and loop.time() + delay < deadline:
                    log.warning("tool server %r (%s) not answering yet (%s); trying again in "
                                "%.1f s", self.name, self.endpoint.describe(), _why(exc), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                raise ToolConfigError(
                    f"tool server {self.name!r} ({self.endpoint.describe()}) did not start or "
                    f"answer within {self.connect_timeout_s:g} s: {_why(exc)}") from exc
        tools = [McpTool(self, t) for t in listed.tools]
        for name in sorted(self.read_only - {t.name for t in tools}):
            await self.close()
            raise ToolConfigError(f"tool server {self.name!r} has no tool {name!r}, which its "
                                  f"read_only list names (it has: "
                                  f"{', '.join(sorted(t.name for t in tools))})")
        return tools

    async def _connected(self) -> Client:
        async with self._lock:
            if self._client is not None:
                return self._client
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            closing = asyncio.Event()
            # The SDK's client lives in task groups that must be entered and left by one
            # task: this one holds the connection while calls come from any task.
            self._holder = asyncio.create_task(self._hold(ready, closing),
                                               name=f"mcp {self.name}")
            self._closing = closing
            self._client = await ready
            self.connections += 1
            return self._client

    async def _hold(self, ready: asyncio.Future[Client], closing: asyncio.Event) -> None:
        try:
            async with self._connect() as client:
                ready.set_result(client)
                await closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            elif not closing.is_set():
                log.warning("tool server %s: connection ended: %s", self.name, _why(exc))
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise

    async def drop(self, connection: int | None = None) -> None:
        """Forget the connection (only if it is still number `connection`, when given: a call
        on an older one must not close its replacement); the next call connects anew."""
        async with self._lock:
            if connection is not None and connection != self.connections:
                return
            closing, holder = self._closing, self._holder
            self._client = self._closing = self._holder = None
        if closing is not None:
            closing.set()
        if holder is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(holder, timeout=10)

    async def close(self) -> None:
        await self.drop()

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolReply:
        try:
            async with asyncio.timeout(self.connect_timeout_s):  # a restart, if it broke
                client = await self._connected()
        except Exception as exc:
            await self.drop()
            raise ToolUnavailable(f"tool server {self.name!r} could not be reached for "
                                  f"{tool}: {type(exc).__name__}") from None
        number = self.connections
        self._in_flight[number] = self._in_flight.get(number, 0) + 1
        try:
            return await self._call(client, number, tool, arguments)
        finally:
            self._in_flight[number] -= 1
            if not self._in_flight[number]:
                del self._in_flight[number]

    async def _call(self, client: Client, number: int, tool: str,
                    arguments: dict[str, Any]) -> ToolReply:
        timed_out = ToolTimeout(f"tool {self.name}.{tool} did not answer within "
                                f"{self.timeout_s:g} s")
        try:
            async with asyncio.timeout(self.timeout_s + 1):  # the SDK's own bound comes first
                result = await client.call_tool(tool, {**arguments, **self.inject},
                                                read_timeout_seconds=self.timeout_s)
        except MCPError as exc:
            if exc.code == mcp_types.REQUEST_TIMEOUT:
                await self._after_timeout(number)
                raise timed_out from None
            if exc.code == mcp_types.CONNECTION_CLOSED:
                await self.drop(number)
                raise ToolUnavailable(f"tool server {self.name!r} closed the connection "
                                      f"during {tool}") from None
            # The server refused the call (an unknown tool, invalid params): an answer.
            return ToolReply(f"{tool} was refused by its server: {exc.message}", is_error=True)
        except TimeoutError:
            await self._after_timeout(number)
            raise timed_out from None
        except Exception as exc:  # the transport: a dead process, a refused connection
            await self.drop(number)
            raise ToolUnavailable(f"tool server {self.name!r} unavailable during {tool}: "
                                  f"{type(exc).__name__}") from None
        return _reply(result)

    async def _after_timeout(self, number: int) -> None:
        if self._in_flight.get(number, 0) <= 1:  # only this call: the server may be stuck
            await self.drop(number)


def _reply(result: mcp_types.CallToolResult) -> ToolReply:
    text = "\n".join(block.text for block in result.content
                     if isinstance(block, mcp_types.TextContent))
    data = result.structured_content
    if data is None and text:
        with contextlib.suppress(ValueError):
            data = json.loads(text)
    return ToolReply(text, data, is_error=result.is_error)


def _cannot_run(exc: BaseException) -> bool:
    """A stdio command that is missing or not executable: trying again changes nothing."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return isinstance(exc, FileNotFoundError | PermissionError | NotADirectoryError)


def _why(exc: BaseException) -> str:
    # Exception groups from the SDK's task groups: the first leaf says what happened.
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _problem(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.path) or "(input)"
    if error.validator in ("required", "additionalProperties"):
        return f"{where}: {error.message}"  # names the key, not a value
    # Other messages quote the offending value; say what the schema wants instead.
    return f"{where}: must satisfy {error.validator} {error.validator_value!r}"


class McpTool:
    """One tool of an MCP server, as the tool layer sees it."""

    def __init__(self, server: McpServer, spec: mcp_types.Tool) -> None:
        self.server = server
        self.name = spec.name
        self.source = server.name
        self.description = spec.description or spec.title or spec.name
        self.read_only = spec.name in server.read_only
        schema = dict(spec.input_schema)
        hidden = set(server.inject)
        if hidden:
            schema["properties"] = {k: v for k, v in (schema.get("properties") or {}).items()
                                    if k not in hidden}
            schema["required"] = [k for k in schema.get("required") or [] if k not in hidden]
        self._schema = schema
        # Made at the first call: jsonschema costs every tool agent ~50 ms of CPU at start,
        # and making a validator checks nothing about the schema anyway.
        self._validator: jsonschema.Draft202012Validator | None = None

    def input_schema(self) -> Mapping[str, Any]:
        return self._schema

    def check(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        given = dict(arguments)
        if set(given) & set(self.server.inject):
            raise InvalidInput(f"{', '.join(sorted(set(given) & set(self.server.inject)))} "
                               "is set by configuration, not by the caller")
        if self._validator is None:
            import jsonschema

            self._validator = jsonschema.Draft202012Validator(self._schema)
        errors = sorted(self._validator.iter_errors(given), key=lambda e: list(e.path))
        if errors:
            raise InvalidInput("; ".join(_problem(e) for e in errors[:5]))
        return given

    async def run(self, arguments: dict[str, Any]) -> ToolReply:
        return await self.server.call(self.name, arguments)
