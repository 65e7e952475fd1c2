"""A tool agent imports the mcp SDK's client without its server half (agents/tools/
mcp_client.py), and the SDK stays whole for whatever imports the server half afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WITHOUT_SERVERS = """
import sys
import counterpoint.agents.tools.mcp_servers
print(" ".join(sorted(m for m in ("mcp.server", "mcp.server.lowlevel", "mcp.server.mcpserver",
                                  "uvicorn", "starlette") if m in sys.modules)) or "none")
"""

# After the lazy import, a real in-process server still connects through the SDK's Client
# (which checks isinstance against Server/MCPServer and calls modern_on_request).
IN_PROCESS = """
import asyncio
import counterpoint.agents.tools.mcp_servers
from mcp import Client
from mcp.server.mcpserver import MCPServer

server = MCPServer("probe")

@server.tool()
def echo(text: str) -> str:
    return text

async def main() -> None:
    async with Client(server) as client:
        tools = await client.list_tools()
        reply = await client.call_tool("echo", {"text": "hi"})
    print(sorted(t.name for t in tools.tools), reply.content[0].text)

asyncio.run(main())
"""


def _run(code: str, tmp_path: Path) -> str:
    env = {"COUNTERPOINT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=True).stdout.strip()


def test_the_tool_client_leaves_the_sdk_servers_unimported(tmp_path: Path) -> None:
    assert _run(WITHOUT_SERVERS, tmp_path) == "none"


def test_an_in_process_server_still_connects_afterwards(tmp_path: Path) -> None:
    assert _run(IN_PROCESS, tmp_path) == "['echo'] hi"


# Another SDK layout (here: a stand-in without the names the client imports) makes the
# import fall back to the whole SDK.
FALLBACK = """
import sys, types
from counterpoint.agents.tools import mcp_client
mcp_client._stand_ins = lambda: {"mcp.server": types.ModuleType("mcp.server")}
mcp_client.import_client()
from mcp import Client
from mcp.server.mcpserver import MCPServer
print(isinstance(MCPServer("x"), MCPServer), "mcp.server.lowlevel" in sys.modules)
"""


def test_another_sdk_layout_falls_back_to_the_whole_sdk(tmp_path: Path) -> None:
    assert _run(FALLBACK, tmp_path) == "True True"
