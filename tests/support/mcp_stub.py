"""A stdio MCP server with tools that misbehave on purpose: one that hangs, one that kills its
own process, and an echo. `python -m tests.support.mcp_stub [--hang-first N]`.

It counts its starts in the file named by STUB_STARTS (one line per start), so a test can see
a restart.
"""

from __future__ import annotations

import os
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("stub")


@server.tool()
def echo(text: str) -> str:
    """Say it back."""
    return text


@server.tool()
def hang(seconds: float = 3600) -> str:
    """Take far too long."""
    time.sleep(seconds)
    return "late"


@server.tool()
def die() -> str:
    """Exit the server process mid-call."""
    os._exit(3)


if __name__ == "__main__":
    if path := os.environ.get("STUB_STARTS"):
        with open(path, "a") as out:
            out.write(f"{os.getpid()}\n")
    server.run("stdio")
