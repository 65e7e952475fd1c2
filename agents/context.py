"""What every agent process is given: the business systems, a provider, and its settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.agents.tools.business import BusinessStore

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
    # Result webhooks (agents/webhooks.py): source or kind -> URL, the HMAC secret, the
    # seconds one POST may take.
    webhook_targets: Mapping[str, str] = field(default_factory=dict)
    webhook_secret: str | None = None
    webhook_timeout_s: float = 10.0

    def model_for(self, agent: str) -> str:
        return self.models.get(agent, DEFAULT_MODEL)
