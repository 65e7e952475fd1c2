"""Billing investigator: invoices, payments, duplicate charges.

Consumes: investigation.tasks.billing (InvestigationTask)
Emits:    investigation.findings (Finding)
"""

from __future__ import annotations

from counterpoint.agents.context import AgentContext
from counterpoint.agents.investigator import build_investigator
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.tools.facts import billing_facts
from counterpoint.bus.agent import Agent
from counterpoint.schemas.events import Fact, Subject


def _gather(store: BusinessStore, subject: Subject, focus: str) -> list[Fact]:
    return billing_facts(store, subject)


def build(ctx: AgentContext) -> Agent:
    return build_investigator("billing", _gather, ctx)
