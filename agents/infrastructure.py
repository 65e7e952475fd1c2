"""Infrastructure investigator: service logs, metrics and recent deploys (focus picks which).

Consumes: investigation.tasks.infrastructure (InvestigationTask)
Emits:    investigation.findings (Finding)
"""

from __future__ import annotations

from counterpoint.agents.context import AgentContext
from counterpoint.agents.investigator import build_investigator
from counterpoint.bus.agent import Agent


def build(ctx: AgentContext) -> Agent:
    return build_investigator("infrastructure", ctx)
