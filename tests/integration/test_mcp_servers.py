"""MCP servers as tool sources, against real server processes: the reference servers
mcp-server-time and mcp-server-sqlite (nobody here wrote them), the demo business server, and a
stub whose tools hang or kill their own process. No broker: this is the tool layer alone."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from counterpoint.agents.tools.config import McpServerConfig, ToolsConfig, open_toolbox
from counterpoint.agents.tools.errors import ToolConfigError, ToolTimeout, ToolUnavailable
from counterpoint.agents.tools.registry import Toolbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SQLITE_SERVER = REPO / ".venv" / "mcp-sqlite" / "bin" / "mcp-server-sqlite"


def time_server(**extra: object) -> McpServerConfig:
    return McpServerConfig.model_validate({
        "command": str(BIN / "mcp-server-time"), "args": ["--local-timezone", "UTC"],
        "read_only": ["get_current_time"], **extra})


def sqlite_server(db: Path) -> McpServerConfig:
    assert SQLITE_SERVER.exists(), "run `make .venv/mcp-sqlite/bin/mcp-server-sqlite`"
    return McpServerConfig(command=str(SQLITE_SERVER), args=["--db-path", str(db)],
                           read_only=["read_query", "list_tables"])


def stub_server(starts: Path, timeout_s: float = 10.0) -> McpServerConfig:
    return McpServerConfig(command=sys.executable, args=["-m", "tests.support.mcp_stub"],
                           env={"STUB_STARTS": str(starts), "PYTHONPATH": str(REPO)},
                           cwd=str(REPO), read_only=["echo", "hang", "die"],
                           timeout_s=timeout_s)


async def opened(config: ToolsConfig, agent: str = "knowledge") -> AsyncIterator[Toolbox]:
    async with AsyncExitStack() as stack:
        yield await open_toolbox(config, [agent], stack, connect_timeout_s=90)


@pytest.fixture
def shop_db(tmp_path: Path) -> Path:
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id TEXT, status TEXT)")
        conn.execute("INSERT INTO orders VALUES ('O-1', 'shipped')")
    return db


async def test_the_time_and_sqlite_servers_are_discovered_and_called(shop_db: Path) -> None:
    config = ToolsConfig(servers={"time": time_server(), "shop": sqlite_server(shop_db)},
                         allowlists={"knowledge": ["time.get_current_time",
                                                   "shop.read_query"]})
    async for box in opened(config):
        session = box.session("knowledge", request_id="r-1")
        assert sorted(s.name for s in session.specs()) == ["get_current_time", "read_query"]
        now = await session.call("get_current_time", {"timezone": "UTC"})
        assert not now.is_error and '"timezone"' in now.content
        rows = await session.call("read_query", {"query": "SELECT status FROM orders"})
        assert not rows.is_error and "shipped" in rows.content
        # Off the allowlist, whatever the model asks: write_query is the server's, not ours.
        refused = await session.call("write_query", {"query": "DELETE FROM orders"})
        assert refused.is_error and "may not use write_query" in refused.content
        bad = await session.call("get_current_time", {"zone": "UTC"})
        assert bad.is_error and "Invalid input" in bad.content
        sources = {f.source for f in session.facts()}
        assert "shop.read_query" in sources
    with sqlite3.connect(shop_db) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)


async def test_a_tool_not_declared_read_only_is_never_handed_to_a_model(shop_db: Path) -> None:
    config = ToolsConfig(servers={"shop": sqlite_server(shop_db)},
                         allowlists={"knowledge": ["shop.write_query"]})
    async for box in opened(config):
        with pytest.raises(ToolConfigError, match="side effects"):
            box.session("knowledge", request_id="r")


async def test_a_missing_tool_or_server_fails_start_up_naming_both(tmp_path: Path) -> None:
    missing_tool = ToolsConfig(servers={"time": time_server()},
                               allowlists={"knowledge": ["time.get_weather"]})
    with pytest.raises(ToolConfigError, match="tool source 'time' has no tool 'get_weather'"):
        async for _ in opened(missing_tool):
            pass
    broken = ToolsConfig(servers={"ghost": McpServerConfig(command=str(tmp_path / "nope"))},
                         allowlists={"knowledge": ["ghost.anything"]})
    with pytest.raises(ToolConfigError, match=r"tool server 'ghost' .* did not start"):
        async for _ in opened(broken):
            pass
    unconfigured = ToolsConfig(allowlists={"knowledge": ["crm.lookup"]})
    with pytest.raises(ToolConfigError, match="tool source 'crm', which is not configured"):
        async for _ in opened(unconfigured):
            pass


async def test_injected_arguments_are_hidden_and_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TZ", "Europe/Paris")
    config = ToolsConfig(servers={"time": time_server(inject={"timezone": "${SHOP_TZ}"})},
                         allowlists={"knowledge": ["time.get_current_time"]})
    async for box in opened(config):
        session = box.session("knowledge", request_id="r")
        (spec,) = session.specs()
        assert "timezone" not in spec.input_schema.get("properties", {})
        answer = await session.call("get_current_time", {})
        assert not answer.is_error and "Europe/Paris" in answer.content
        chosen = await session.call("get_current_time", {"timezone": "UTC"})
        assert chosen.is_error  # the model cannot set what configuration sets


async def test_an_unset_secret_fails_naming_the_key() -> None:
    os.environ.pop("NO_SUCH_TOKEN", None)
    config = ToolsConfig(servers={"crm": McpServerConfig(
        url="http://127.0.0.1:9/mcp", headers={"Authorization": "Bearer ${NO_SUCH_TOKEN}"})},
        allowlists={"knowledge": ["crm.lookup"]}, where="counterpoint.toml")
    with pytest.raises(ToolConfigError, match=r"counterpoint.toml: mcp.servers.crm.headers."
                                              r"Authorization: environment variable "
                                              r"NO_SUCH_TOKEN is not set"):
        async for _ in opened(config):
            pass


async def test_a_hanging_tool_times_out_and_the_server_is_restarted(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    config = ToolsConfig(servers={"stub": stub_server(starts, timeout_s=1.0)},
                         allowlists={"knowledge": ["stub.hang", "stub.echo"]})
    async for box in opened(config):
        session = box.session("knowledge", request_id="r")
        with pytest.raises(ToolTimeout, match="did not answer within 1 s") as raised:
            await session.call("hang", {})
        assert raised.value.retriable
        answer = await session.call("echo", {"text": "still here"})
        assert not answer.is_error and "still here" in answer.content
    assert len(starts.read_text().split()) == 2  # a fresh process after the timeout


async def test_a_server_that_dies_is_restarted_on_the_next_call(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    config = ToolsConfig(servers={"stub": stub_server(starts)},
                         allowlists={"knowledge": ["stub.die", "stub.echo"]})
    async for box in opened(config):
        session = box.session("knowledge", request_id="r")
        with pytest.raises(ToolUnavailable) as raised:
            await session.call("die", {})
        assert raised.value.retriable
        answer = await session.call("echo", {"text": "back"})
        assert not answer.is_error and "back" in answer.content
    assert len(starts.read_text().split()) == 2


async def test_the_demo_business_server_over_stdio(tmp_path: Path) -> None:
    config = ToolsConfig(servers={"business": McpServerConfig(
        command=str(BIN / "counterpoint-demo-business"),
        args=["--stdio", "--db", str(tmp_path / "demo.db")], read_only=["list_invoices"])},
        allowlists={"billing": ["business.list_invoices"]})
    async for box in opened(config, "billing"):
        session = box.session("billing", request_id="r")
        (spec,) = session.specs()
        assert set(spec.input_schema["properties"]) == {"customer_id"}  # no injected store
        answer = await session.call("list_invoices", {"customer_id": "C-42"})
        assert not answer.is_error
        assert session.facts()[0].source == "billing.invoices/INV-2291"


async def test_a_server_that_comes_up_late_is_waited_for(tmp_path: Path) -> None:
    """Agents restarting together reach a shared server that is down or busy for a moment:
    start-up tries again within COUNTERPOINT_TOOL_CONNECT_TIMEOUT_S instead of giving up."""
    import asyncio
    import subprocess

    from counterpoint.infra.broker import free_port

    port = free_port("127.0.0.1")
    config = ToolsConfig(servers={"business": McpServerConfig(
        url=f"http://127.0.0.1:{port}/mcp", read_only=["list_invoices"])},
        allowlists={"billing": ["business.list_invoices"]})

    async def start_late() -> subprocess.Popen[bytes]:
        await asyncio.sleep(3)  # nothing listens on the port until then
        return subprocess.Popen([str(BIN / "counterpoint-demo-business"), "--port", str(port),
                                 "--db", str(tmp_path / "demo.db")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    late = asyncio.ensure_future(start_late())
    try:
        async for box in opened(config, "billing"):
            answer = await box.session("billing", request_id="r").call(
                "list_invoices", {"customer_id": "C-42"})
            assert not answer.is_error
    finally:
        server = await late
        server.terminate()
        server.wait(10)


def test_an_agent_whose_tool_is_missing_does_not_start_and_says_which(tmp_path: Path) -> None:
    import subprocess

    project = tmp_path / "counterpoint.toml"
    project.write_text(f"""
[project]
name = "mcptest"

[mcp.servers.time]
command = "{BIN / 'mcp-server-time'}"
read_only = ["get_current_time"]

[agents.knowledge]
use = "counterpoint.agents.investigator:build"
tools = ["time.get_weather"]
""")
    env = {**os.environ, "COUNTERPOINT_CONFIG": str(project), "COUNTERPOINT_HOME": str(tmp_path),
           "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "COUNTERPOINT_TOOL_CONNECT_TIMEOUT_S": "90",
           "COLUMNS": "300"}
    done = subprocess.run([str(BIN / "counterpoint"), "agent", "knowledge"], env=env,
                          capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 2, done.stderr
    assert "tool source 'time' has no tool 'get_weather'" in done.stderr
    assert "Traceback" not in done.stderr
