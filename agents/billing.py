"""Billing investigator: invoices, payments, duplicate charges.

Consumes: investigation.tasks.billing (InvestigationTask)
Emits:    investigation.findings (Finding)
"""

from __future__ import annotations

from counterpoint.agents.context import AgentContext
from counterpoint.agents.investigator import build_investigator
from counterpoint.bus.agent import Agent


def build(ctx: AgentContext) -> Agent:
    return build_investigator("billing", ctx)
