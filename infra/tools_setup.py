"""Which tool configuration a process uses: the built-in one over the demo business server, with
the project file's tool sections on top (a source or an agent's allowlist it names replaces the
built-in one)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from urllib.parse import urlsplit

from counterpoint.agents.tools.config import ToolsConfig, builtin
from counterpoint.agents.tools.errors import ToolConfigError
from counterpoint.infra.settings import Settings


def tools_config(settings: Settings) -> ToolsConfig:
    base = builtin(settings.demo_business_url)
    if settings.config is None:
        return base
    where = str(settings.config)
    try:
        data = tomllib.loads(settings.config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolConfigError(f"{where}: cannot be read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ToolConfigError(f"{where}: not valid TOML: {exc}") from exc
    try:
        return ToolsConfig.from_project(data, where).over(base)
    except ValueError as exc:  # pydantic's ValidationError names the key
        raise ToolConfigError(f"{where}: {exc}") from exc


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
