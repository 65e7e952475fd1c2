"""Serve `@tool` functions as an MCP server (the `mcp` SDK's low-level server).

The same functions a project can load in-process (`[tools.python.NAME]`) can run as their own
process and be reached over MCP (`[mcp.servers.NAME]`); the demo business server does this.
Injected parameters are filled here, from the values the server was started with, and never
appear in the schema a client lists. Each tool carries MCP's annotations: `readOnlyHint` for a
read-only tool, `idempotentHint` where the tool says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import mcp_types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from counterpoint.agents.tools.define import FunctionTool
from counterpoint.agents.tools.errors import InvalidInput
from counterpoint.agents.tools.registry import PythonTool


def mcp_server(name: str, functions: Iterable[FunctionTool],
               values: Mapping[str, Any] | None = None, *, version: str = "") -> Server[Any]:
    tools = {f.name: PythonTool(f, name, values or {}) for f in functions}

    async def list_tools(ctx: ServerRequestContext[Any],
                         params: mcp_types.PaginatedRequestParams | None
                         ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=[mcp_types.Tool(
            name=t.name, description=t.description, input_schema=dict(t.input_schema()),
            annotations=mcp_types.ToolAnnotations(read_only_hint=t.read_only,
                                                  destructive_hint=not t.read_only),
        ) for t in tools.values()])

    async def call_tool(ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
                        ) -> mcp_types.CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            return _error(f"there is no tool named {params.name!r}")
        try:
            arguments = tool.check(params.arguments or {})
        except InvalidInput as exc:
            return _error(f"invalid input for {tool.name}: {exc}")
        try:
            reply = await tool.run(arguments)
        except Exception as exc:  # the exception's text may hold data: only its kind goes out
            return _error(f"{tool.name} failed ({type(exc).__name__})")
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(text=reply.text)],
            structured_content=reply.data if isinstance(reply.data, dict) else None)

    def input_schema(name: str) -> Mapping[str, Any] | None:
        tool = tools.get(name)
        return tool.input_schema() if tool is not None else None

    # `get_tool_input_schema`: without it the SDK checks a call's Mcp-Param headers against
    # the schema it finds by running our whole tools/list (and serialising every tool) on every
    # tools/call: 13% of the demo business server's CPU in the pipeline bench (py-spy).
    return Server(name, version=version, get_tool_input_schema=input_schema,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def _error(text: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=text)], is_error=True)


async def serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def serve_http(server: Server[Any], host: str, port: int, path: str = "/mcp") -> None:
    """Streamable HTTP at http://HOST:PORT/PATH until SIGTERM/SIGINT."""
    import uvicorn

    # JSON responses: no tool here streams progress, so one JSON body per call instead of an
    # SSE-capable stream (a task group, a memory stream and a deferral timer per request).
    app = server.streamable_http_app(streamable_http_path=path, host=host, json_response=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    asyncio.run(uvicorn.Server(config).serve())
