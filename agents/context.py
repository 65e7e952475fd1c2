"""What every agent process is given: the business systems, a provider, and its settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.budget import metered
from counterpoint.agents.cost import PriceTable
from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.agents.outcomes import OutcomeStore
from counterpoint.agents.reuse import DEFAULT_WINDOW
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.tools.catalog import CATALOG
from counterpoint.agents.tools.registry import DEFAULT_MAX_TURNS, Registry
from counterpoint.agents.webhook_egress import EgressPolicy
from counterpoint.schemas.alert_cap import DEFAULT_MAX_ALERTS

# Claude models per agent once the anthropic provider lands; the offline provider ignores them.
DEFAULT_MODELS: Final[Mapping[str, str]] = {
    "triage": "claude-haiku-4-5",
    "synthesis": "claude-sonnet-4-6",
}
DEFAULT_MODEL: Final = "claude-haiku-4-5"


@dataclass
class AgentContext:
    store: BusinessStore
    provider: LLMProvider
    # How long synthesis waits for a request's findings before publishing a partial result.
    synthesis_deadline: timedelta = timedelta(seconds=30)
    # A plan is never due sooner than this after a process saw it, so a join rebuilt after a
    # restart replays its findings before the deadline can fire.
    synthesis_replay_grace: timedelta = timedelta(seconds=2)
    models: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    # Which proposed actions wait for a person (risk table, threshold, time to decide).
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    # Keys this process signs approval events with, and the trust it checks them against.
    keys: Keyring = field(default_factory=Keyring.ephemeral)
    # Cost and budgets (agents/cost.py, agents/budget.py); None = no default budget.
    prices: PriceTable = field(default_factory=PriceTable.default)
    request_budget_usd: float | None = None
    # Identical investigation tasks within this window run once (agents/reuse.py).
    reuse_window: timedelta = DEFAULT_WINDOW
    # Past outcomes per customer and service (agents/outcomes.py); in memory unless given.
    outcomes: OutcomeStore = field(default_factory=OutcomeStore.in_memory)

    def __post_init__(self) -> None:
        # Every agent's calls are priced, and checked against the step's budget.
        self.provider = metered(self.provider, self.prices)
    # The tools agents may be given (each agent only its allowlist) and how many model turns
    # of one investigation may ask for tools before it must answer.
    tools: Registry = CATALOG
    max_tool_turns: int = DEFAULT_MAX_TURNS
    # Result webhooks (agents/webhooks.py): source or kind -> URL, the HMAC secret, the
    # seconds one POST may take, and where deliveries may connect (agents/webhook_egress.py).
    webhook_targets: Mapping[str, str] = field(default_factory=dict)
    webhook_secret: str | None = None
    webhook_timeout_s: float = 10.0
    webhook_egress: EgressPolicy = field(default_factory=EgressPolicy)
    # Alerts one Alertmanager notification may carry (schemas/alert_cap.py).
    max_alerts: int = DEFAULT_MAX_ALERTS

    def model_for(self, agent: str) -> str:
        return self.models.get(agent, DEFAULT_MODEL)
