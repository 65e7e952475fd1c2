"""Which tool configuration a process uses: the project file's tool sections over the built-in
ones (the demo business server). A source the file names replaces the built-in one of that name;
an agent the file gives a `tools` list gets that allowlist. A built-in agent the file lists
without one keeps its built-in allowlist; no other agent gets one from beneath."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from counterpoint.agents.catalog import BUILTIN
from counterpoint.agents.tools.config import ToolsConfig, builtin
from counterpoint.infra.project import Project
from counterpoint.infra.settings import Settings


def tools_config(settings: Settings, project: Project) -> ToolsConfig:
    base = builtin(settings.demo_business_url)
    # An agent of one's own that happens to be called `billing` is not the built-in billing
    # investigator: it gets no tools it did not ask for.
    ours = {name: entries for name, entries in base.allowlists.items()
            if name in project.agents and project.agents[name].use == BUILTIN.get(name)}
    return project.tools.over(base.model_copy(update={"allowlists": ours}))


def demo_business_address(settings: Settings, config: ToolsConfig,
                          agents: Iterable[str]) -> tuple[str, int] | None:
    """Where to start the demo business server: when an agent to be started uses the built-in
    `business` source and its URL is on this host; None otherwise."""
    server = config.servers.get("business")
    if server is None or server.url != settings.demo_business_url:
        return None
    if "business" not in config.sources_for(list(agents)):
        return None
    url = urlsplit(settings.demo_business_url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1") or url.port is None:
        return None
    return url.hostname, url.port
