"""The built-in agents, by the import strings a project file would use for them.

With no project file, Counterpoint runs these (the ticket and alert pipeline); a project file
can name any of them too. They are loaded like a user's agents (agents/loading.py). The four
investigators are one factory; each investigates the skill named by its entry's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from counterpoint.agents import loading

if TYPE_CHECKING:
    from counterpoint.agents.context import AgentContext
    from counterpoint.bus.agent import Agent

BUILTIN: Final[dict[str, str]] = {
    "triage": "counterpoint.agents.triage:build",
    "billing": "counterpoint.agents.investigator:build",
    "account": "counterpoint.agents.investigator:build",
    "infrastructure": "counterpoint.agents.investigator:build",
    "knowledge": "counterpoint.agents.investigator:build",
    "synthesis": "counterpoint.agents.synthesis:build",
    "approvals": "counterpoint.agents.approvals:build",
    "executor": "counterpoint.agents.executor:build",
    "memory": "counterpoint.agents.memory:build",
    "webhooks": "counterpoint.agents.webhooks:build",
}
AGENT_NAMES: Final = tuple(BUILTIN)


class UnknownAgent(LookupError):
    pass


def build(name: str, ctx: AgentContext) -> Agent:
    try:
        spec = BUILTIN[name]
    except KeyError:
        raise UnknownAgent(
            f"no agent named {name!r}; choose one of: {', '.join(AGENT_NAMES)}"
        ) from None
    return loading.build(spec, ctx.named(name))
