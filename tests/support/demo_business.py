"""The demo business for unit tests: its tools and actions in-process, over a private seeded
database, with the built-in allowlists — the same functions the demo business server serves
over MCP."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from counterpoint.agents.context import AgentContext
from counterpoint.agents.tools.config import BUILTIN_ALLOWLISTS
from counterpoint.agents.tools.define import tools_in
from counterpoint.agents.tools.registry import Toolbox, python_tools
from counterpoint_demo import actions, tools
from counterpoint_demo.store import BusinessStore


def demo_toolbox(store: BusinessStore) -> Toolbox:
    return Toolbox(python_tools("business", [*tools_in(tools), *tools_in(actions)],
                                {"store": store}), BUILTIN_ALLOWLISTS)


def allowed(agent: str) -> list[str]:
    """The bare tool names a built-in agent's model is offered, in allowlist order."""
    return [entry.partition(".")[2] for entry in BUILTIN_ALLOWLISTS.get(agent, [])]


@dataclass
class Spy:
    calls: int = 0


def spied_toolbox(store: BusinessStore) -> tuple[Toolbox, dict[str, Spy]]:
    """The demo toolbox with every tool's runs counted, by tool name."""
    spies: dict[str, Spy] = {}
    spied = []
    for f in [*tools_in(tools), *tools_in(actions)]:
        spy = spies[f.name] = Spy()

        def counting(*, _inner: Any = f.fn, _spy: Spy = spy, **kwargs: Any) -> Any:
            _spy.calls += 1
            return _inner(**kwargs)

        spied.append(replace(f, fn=counting))
    return Toolbox(python_tools("business", spied, {"store": store}), BUILTIN_ALLOWLISTS), spies


def demo_context(store: BusinessStore, **kwargs: Any) -> AgentContext:
    """An agent context whose tools are the demo business's, actions included; the executor's
    ledger goes beside the store (its folder is the home)."""
    kwargs.setdefault("tools", demo_toolbox(store))
    kwargs["defaults"] = {"home": store.path.parent, **kwargs.get("defaults", {})}
    return AgentContext(**kwargs)
