"""docs/tools.md's worked example, run as written: the billing investigator pointed at a team's
own Python tools (and, parsed and expanded, at a team's own MCP server) by counterpoint.toml
alone, with the rest of the built-in pipeline on the demo business."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.tools.config import ToolsConfig, mcp_server, python_source
from counterpoint.agents.tools.define import tools_in
from counterpoint.agents.tools.registry import Toolbox, python_tools
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.project import load_project
from counterpoint.infra.settings import Settings
from counterpoint.infra.tools_setup import tools_config
from counterpoint.topics.registry import INTAKE_TICKETS, INVESTIGATION_FINDINGS
from counterpoint_demo import actions as demo_actions
from counterpoint_demo import tools as demo_tools
from counterpoint_demo.store import BusinessStore
from tests.support.demo_business import demo_context

DOC = Path(__file__).resolve().parents[2] / "docs" / "tools.md"
EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def _block(lang: str, containing: str) -> str:
    (found,) = [b for b in _blocks(lang) if containing in b]
    return found


def _section(text: str, header: str) -> str:
    """The section `header` of a TOML text, up to the next blank line."""
    (found,) = re.findall(rf"^{re.escape(header)}\n.*?\n\n", text, flags=re.S | re.M)
    return found


def _project(folder: Path, text: str) -> ToolsConfig:
    path = folder / "counterpoint.toml"
    path.write_text(text, encoding="utf-8")
    return tools_config(Settings(), load_project(path))


def test_the_mcp_example_loads_and_takes_its_token_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _project(tmp_path, _block("toml", "[mcp.servers.acme_billing]"))
    assert config.allowlists["billing"][:2] == ["acme_billing.lookup_customer",
                                                "acme_billing.list_invoices"]
    assert config.allowlists["account"][0].startswith("business.")  # the rest stays as it was
    monkeypatch.setenv("ACME_BILLING_TOKEN", "t0ken")
    server = mcp_server("acme_billing", config.servers["acme_billing"], config.where)
    assert server.endpoint.headers == {"Authorization": "Bearer t0ken"}
    assert "t0ken" not in server.endpoint.describe()


async def test_the_python_example_answers_the_billing_investigation(
        tmp_path: Path, store: BusinessStore, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "acme_tools"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "billing.py").write_text(_block("python", "# acme_tools/billing.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ACME_API_KEY", "k-123")
    # The same file, the MCP server's section and billing's entry replaced as the doc says.
    mcp_file = _block("toml", "[mcp.servers.acme_billing]")
    instead = _block("toml", "[tools.python.acme]")
    text = mcp_file.replace(_section(mcp_file, "[mcp.servers.acme_billing]"), "").replace(
        _section(mcp_file, "[agents.billing]"), instead + "\n")
    config = _project(tmp_path, text)
    assert "acme_billing" not in config.servers

    # The demo business stays the `business` source, in-process here instead of over MCP.
    box = Toolbox([*python_source("acme", config.python["acme"], config.where),
                   *python_tools("business", [*tools_in(demo_tools), *tools_in(demo_actions)],
                                 {"store": store})],
                  {a: config.allowlists[a] for a in AGENT_NAMES if a in config.allowlists})
    bus = MemoryBus()
    for name in AGENT_NAMES:
        bus.add(build(name, demo_context(store, provider=OfflineProvider(), tools=box)))
    await bus.publish(INTAKE_TICKETS.name, (EXAMPLES / "ticket_dual_intent.json").read_bytes(),
                      key=b"T-1001")
    await bus.run_until_idle()

    findings = {f.skill: f for f in (INVESTIGATION_FINDINGS.decode(r.value or b"")
                                     for r in bus.records(INVESTIGATION_FINDINGS.name))}
    assert [(f.text, f.source) for f in findings["billing"].facts] == [
        ("Invoice A-1 of C-42 (acme-eu) was paid twice.", "acme.invoices/A-1")]
    assert any(f.source.startswith("auth.") for f in findings["account"].facts)
