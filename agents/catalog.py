"""Every agent by name: what `counterpoint agent NAME` and `counterpoint up` start."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from counterpoint.agents import (
    account,
    approvals,
    billing,
    executor,
    infrastructure,
    knowledge,
    memory,
    synthesis,
    triage,
    webhooks,
)
from counterpoint.agents.context import AgentContext
from counterpoint.bus.agent import Agent

BUILDERS: Final[dict[str, Callable[[AgentContext], Agent]]] = {
    "triage": triage.build,
    "billing": billing.build,
    "account": account.build,
    "infrastructure": infrastructure.build,
    "knowledge": knowledge.build,
    "synthesis": synthesis.build,
    "approvals": approvals.build,
    "executor": executor.build,
    "memory": memory.build,
    "webhooks": webhooks.build,
}
AGENT_NAMES: Final = tuple(BUILDERS)


class UnknownAgent(LookupError):
    pass


def build(name: str, ctx: AgentContext) -> Agent:
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise UnknownAgent(
            f"no agent named {name!r}; choose one of: {', '.join(AGENT_NAMES)}"
        ) from None
    return builder(ctx)
