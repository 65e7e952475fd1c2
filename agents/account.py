"""Account investigator: login events, lockouts, account status.

Consumes: investigation.tasks.account (InvestigationTask)
Emits:    investigation.findings (Finding)
"""

from __future__ import annotations

from counterpoint.agents.context import AgentContext
from counterpoint.agents.investigator import build_investigator
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.tools.facts import account_facts
from counterpoint.bus.agent import Agent
from counterpoint.schemas.events import Fact, Subject


def _gather(store: BusinessStore, subject: Subject, focus: str) -> list[Fact]:
    return account_facts(store, subject)


def build(ctx: AgentContext) -> Agent:
    return build_investigator("account", _gather, ctx)
