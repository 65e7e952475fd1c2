"""Agents from import strings: `module.path:attribute`, the way `counterpoint agent` and a
project file name them.

The attribute is an `Agent`, or a factory that takes the process's `AgentContext` and returns
one. The built-in agents are loaded exactly like a user's (`counterpoint.agents.triage:build`).
Every failure names the import string and what went wrong, for a person to fix.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from counterpoint.bus.agent import Agent, AgentDeclarationError
from counterpoint.bus.checks import check_agent

if TYPE_CHECKING:
    from counterpoint.agents.context import AgentContext

IMPORT_STRING: Final = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"(\.[A-Za-z_][A-Za-z0-9_]*)*$")

Factory = Callable[["AgentContext"], Agent]


class LoadError(ValueError):
    """An import string that does not give an agent; the message says why."""


def is_import_string(text: str) -> bool:
    return bool(IMPORT_STRING.match(text))


def load(spec: str) -> Agent | Factory:
    """The object `spec` names: an Agent or a factory (anything else is a LoadError)."""
    if not is_import_string(spec):
        raise LoadError(f"{spec!r} is not an import string: expected MODULE:ATTRIBUTE, e.g. "
                        "'mypackage.agents:researcher'")
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or "?"
        if module_name == missing or module_name.startswith(missing + "."):
            raise LoadError(f"{spec!r}: no module named {missing!r} (is its folder on the "
                            "project's path, or the package installed?)") from exc
        raise LoadError(f"{spec!r}: importing {module_name} failed: no module named "
                        f"{missing!r}") from exc
    except Exception as exc:
        raise LoadError(f"{spec!r}: importing {module_name} raised "
                        f"{type(exc).__name__}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"{spec!r}: {module_name} has no attribute {attribute!r}") from None
    if isinstance(target, Agent) or callable(target):
        return target  # type: ignore[no-any-return]
    raise LoadError(f"{spec!r} is a {type(target).__name__}, neither an Agent nor a factory "
                    "taking an AgentContext and returning one")


def build(spec: str, ctx: AgentContext) -> Agent:
    """Load `spec` and make the Agent (calling it with `ctx` when it is a factory), then check
    its declarations (bus/checks.py)."""
    from counterpoint.agents.context import SettingsError

    target = load(spec)
    try:
        agent = target if isinstance(target, Agent) else target(ctx)
        if not isinstance(agent, Agent):
            raise LoadError(f"returned a {type(agent).__name__}, not an Agent")
        check_agent(agent)
    except (AgentDeclarationError, LoadError, SettingsError) as exc:
        raise LoadError(f"{spec!r}: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"{spec!r}: building the agent raised {type(exc).__name__}: "
                        f"{exc}") from exc
    return agent


def default_name(spec: str) -> str:
    """The name an agent loaded by `spec` runs as when no project names it: the attribute,
    or the module's last part when the attribute is `build` (`counterpoint.agents.triage:build`
    is triage)."""
    module_name, _, attribute = spec.partition(":")
    last = attribute.rsplit(".", 1)[-1]
    return module_name.rsplit(".", 1)[-1] if last == "build" else last
