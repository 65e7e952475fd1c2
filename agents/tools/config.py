"""Where an agent's tools come from: typed configuration, and opening it into a `Toolbox`.

The project file holds it (docs/tools.md):

    [mcp.servers.NAME]    an MCP server: `command` (+ `args`, `env`, `cwd`) for stdio, or `url`
                          (+ `headers`) for streamable HTTP; `timeout_s` per call; `read_only`,
                          the tools a model may call; `inject`, arguments hidden from the model
    [tools.python.NAME]   a module of `@tool` functions: `module`, `inject`
    [agents.NAME] tools   the agent's allowlist, `SOURCE.TOOL` entries

Any string value may name environment variables as `${VAR}`; they are read when the tools are
opened, so a secret stays out of the file. An unset variable fails start-up naming the key.
With no project file, the built-in agents use the demo business server (`builtin`).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from counterpoint.agents.tools.define import tools_in
from counterpoint.agents.tools.errors import ToolConfigError
from counterpoint.agents.tools.registry import Tool, Toolbox, python_tools

if TYPE_CHECKING:
    from counterpoint.agents.tools.mcp_servers import McpServer

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SOURCE = r"^[a-z][a-z0-9_-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class McpServerConfig(_Strict):
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    read_only: list[str] = Field(default_factory=list)
    inject: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (stdio) or `url` (streamable HTTP)")
        if self.url is None and self.headers:
            raise ValueError("`headers` are for a `url` server")
        if self.command is None and (self.args or self.env or self.cwd):
            raise ValueError("`args`, `env` and `cwd` are for a `command` server")
        return self


class PythonToolsConfig(_Strict):
    module: str = Field(min_length=1)
    inject: dict[str, str] = Field(default_factory=dict)


class ToolsConfig(_Strict):
    """Every tool source by name, and each agent's allowlist (`SOURCE.TOOL` entries)."""

    servers: dict[str, McpServerConfig] = Field(default_factory=dict)
    python: dict[str, PythonToolsConfig] = Field(default_factory=dict)
    allowlists: dict[str, list[str]] = Field(default_factory=dict)
    where: str = "the tools configuration"  # the file, for messages

    @model_validator(mode="after")
    def _names(self) -> ToolsConfig:
        keys = [*(f"mcp.servers.{n}" for n in self.servers),
                *(f"tools.python.{n}" for n in self.python)]
        for key in keys:
            if not re.match(_SOURCE, key.rpartition(".")[2]):
                raise ValueError(f"{key}: a tool source's name must be lower-case letters, "
                                 "digits, '-' or '_'")
        if both := sorted(set(self.servers) & set(self.python)):
            raise ValueError(f"tools.python.{both[0]}: also the name of an MCP server "
                             f"(mcp.servers.{both[0]}); a source name is used once")
        return self

    def over(self, base: ToolsConfig) -> ToolsConfig:
        """This configuration on top of `base`: its sources replace theirs by name, and an
        agent it gives an allowlist gets that one instead of the base's."""
        mine = set(self.servers) | set(self.python)
        return ToolsConfig(
            servers={**{k: v for k, v in base.servers.items() if k not in mine}, **self.servers},
            python={**{k: v for k, v in base.python.items() if k not in mine}, **self.python},
            allowlists={**base.allowlists, **self.allowlists}, where=self.where)

    def sources_for(self, agents: Sequence[str]) -> set[str]:
        """The sources `agents` use; `ToolConfigError` naming the first allowlist that names
        a source not configured (so `up` stops before starting agents that would fail)."""
        used = {entry.partition(".")[0] for agent in agents
                for entry in self.allowlists.get(agent, [])}
        for source in sorted(used - set(self.servers) - set(self.python)):
            names = ", ".join(sorted([*self.servers, *self.python])) or "none"
            user = next(a for a in agents if any(e.startswith(f"{source}.")
                                                 for e in self.allowlists.get(a, [])))
            raise ToolConfigError(f"{self.where}: agents.{user}.tools names tool source "
                                  f"{source!r}, which is not configured (sources: {names})")
        return used


# The built-in agents' allowlists over the demo business server (demo/, `counterpoint-demo-
# business`). A project file replaces them.
_READERS: Final[dict[str, list[str]]] = {
    "billing": ["business.lookup_customer", "business.list_invoices",
                "business.search_knowledge_base"],
    "account": ["business.lookup_customer", "business.get_account_status",
                "business.list_login_events", "business.search_knowledge_base"],
    "infrastructure": ["business.search_service_logs", "business.get_service_metrics",
                       "business.list_recent_deploys", "business.search_knowledge_base"],
    "knowledge": ["business.search_knowledge_base"],
    "synthesis": ["business.lookup_customer"],
}
BUILTIN_READ_ONLY: Final = sorted({entry.partition(".")[2]
                                   for names in _READERS.values() for entry in names})
# The executor's are the server's actions: side-effecting tools called only after an approval
# (agents/executor.py). They are not read-only, so no model session can be given one.
BUILTIN_ALLOWLISTS: Final[dict[str, list[str]]] = {**_READERS, "executor": [
    f"business.{kind}" for kind in ("refund", "unlock_account", "send_password_reset",
                                    "rollback_deploy", "restart_service")]}


def builtin(business_url: str) -> ToolsConfig:
    return ToolsConfig(
        # One shared server for every agent: under load (the chaos test) a call waits its turn.
        servers={"business": McpServerConfig(url=business_url, read_only=BUILTIN_READ_ONLY,
                                             timeout_s=30)},
        allowlists=BUILTIN_ALLOWLISTS, where="the built-in tools (no project file)")


def expand(value: str, key: str, environ: Mapping[str, str]) -> str:
    """`${VAR}` replaced from the environment; an unset one fails naming `key`."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise ToolConfigError(f"{key}: environment variable {name} is not set")
        return environ[name]

    return _VAR.sub(one, value)


def _expanded(values: Mapping[str, str], key: str, environ: Mapping[str, str]) -> dict[str, str]:
    return {k: expand(v, f"{key}.{k}", environ) for k, v in values.items()}


def mcp_server(name: str, config: McpServerConfig, where: str,
               environ: Mapping[str, str] | None = None, *,
               connect_timeout_s: float = 30.0) -> McpServer:
    # Imported here, not above: the MCP SDK costs an agent's start-up most of its import time,
    # and an agent without an MCP source (or a command that only reads the configuration)
    # never needs it.
    from counterpoint.agents.tools.mcp_servers import Endpoint, McpServer

    env = os.environ if environ is None else environ
    key = f"{where}: mcp.servers.{name}"
    endpoint = Endpoint(
        command=config.command and expand(config.command, f"{key}.command", env),
        args=tuple(expand(a, f"{key}.args", env) for a in config.args),
        env=_expanded(config.env, f"{key}.env", env) or None, cwd=config.cwd,
        url=config.url and expand(config.url, f"{key}.url", env),
        headers=_expanded(config.headers, f"{key}.headers", env) or None)
    return McpServer(name, endpoint, timeout_s=config.timeout_s,
                     connect_timeout_s=connect_timeout_s, read_only=frozenset(config.read_only),
                     inject=_expanded(config.inject, f"{key}.inject", env))


def python_source(name: str, config: PythonToolsConfig, where: str,
                  environ: Mapping[str, str] | None = None) -> list[Tool]:
    key = f"{where}: tools.python.{name}"
    try:
        module = importlib.import_module(config.module)
    except ImportError as exc:
        raise ToolConfigError(f"{key}.module: cannot import {config.module!r}: {exc}") from exc
    functions = tools_in(module)
    if not functions:
        raise ToolConfigError(f"{key}.module: {config.module} defines no @tool functions")
    values = _expanded(config.inject, f"{key}.inject", os.environ if environ is None else environ)
    return list(python_tools(name, functions, values))


async def open_toolbox(config: ToolsConfig, agents: Sequence[str], stack: AsyncExitStack,
                       *, connect_timeout_s: float = 30.0) -> Toolbox:
    """Open the sources `agents` use (their MCP servers closed by `stack`), and check every
    allowlist entry against what the sources offer; `ToolConfigError` when one fails."""
    tools: list[Tool] = []
    allowlists = {a: config.allowlists[a] for a in agents if a in config.allowlists}
    for source in sorted(config.sources_for(agents)):
        if source in config.python:
            tools += python_source(source, config.python[source], config.where)
        else:
            server = mcp_server(source, config.servers[source], config.where,
                                connect_timeout_s=connect_timeout_s)
            stack.push_async_callback(server.close)
            tools += await server.start()
    try:
        return Toolbox(tools, allowlists)
    except ToolConfigError as exc:
        raise ToolConfigError(f"{config.where}: {exc}") from exc
