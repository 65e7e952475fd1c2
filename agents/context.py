"""What every agent process is given: the business systems, a provider, and its settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.tools.catalog import CATALOG
from counterpoint.agents.tools.registry import DEFAULT_MAX_TURNS, Registry

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
    # The tools agents may be given (each agent only its allowlist) and how many model turns
    # of one investigation may ask for tools before it must answer.
    tools: Registry = CATALOG
    max_tool_turns: int = DEFAULT_MAX_TURNS

    def model_for(self, agent: str) -> str:
        return self.models.get(agent, DEFAULT_MODEL)
