"""Account investigator: login events, lockouts, account status.

Consumes: investigation.tasks.account (InvestigationTask)
Emits:    investigation.findings (Finding)
"""

from __future__ import annotations

from counterpoint.agents.context import AgentContext
from counterpoint.agents.investigator import build_investigator
from counterpoint.bus.agent import Agent


def build(ctx: AgentContext) -> Agent:
    return build_investigator("account", ctx)
