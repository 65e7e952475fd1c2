"""Which tool configuration a process uses: the project file's tool sections, or the built-in
one over the demo business server."""

from __future__ import annotations

import tomllib
from urllib.parse import urlsplit

from counterpoint.agents.tools.config import ToolsConfig, builtin
from counterpoint.agents.tools.errors import ToolConfigError
from counterpoint.infra.settings import Settings


def tools_config(settings: Settings) -> ToolsConfig:
    if settings.config is None:
        return builtin(settings.demo_business_url)
    where = str(settings.config)
    try:
        data = tomllib.loads(settings.config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ToolConfigError(f"{where}: cannot be read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ToolConfigError(f"{where}: not valid TOML: {exc}") from exc
    try:
        return ToolsConfig.from_project(data, where)
    except ValueError as exc:  # pydantic's ValidationError names the key
        raise ToolConfigError(f"{where}: {exc}") from exc


def demo_business_address(settings: Settings) -> tuple[str, int] | None:
    """Where to start the demo business server: when the built-in tools are used and its URL
    is on this host; None otherwise."""
    if settings.config is not None:
        return None
    url = urlsplit(settings.demo_business_url)
    if url.hostname not in ("127.0.0.1", "localhost", "::1") or url.port is None:
        return None
    return url.hostname, url.port
