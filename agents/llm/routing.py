"""Which Claude model answers for which agent, and which one stands in when it is overloaded.

The model per agent is `AgentContext.model_for(agent)`: `DEFAULT_MODELS` in agents/context.py
(haiku for triage, sonnet for synthesis), `DEFAULT_MODEL` (haiku) for every other agent — the
investigators — and `COUNTERPOINT_MODEL_<AGENT>` overrides any of them (infra/settings.py).

When a model answers "overloaded" (HTTP 529), the anthropic provider asks its fallback once.
By default the two default models stand in for each other; a single configured fallback
stands in for every model; `None` means no fallback (the bus then retries with backoff).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from counterpoint.agents.context import DEFAULT_MODEL, DEFAULT_MODELS

HAIKU: Final = "claude-haiku-4-5"
SONNET: Final = "claude-sonnet-4-6"

# A model -> the model to ask when it is overloaded.
DEFAULT_FALLBACKS: Final[Mapping[str, str]] = {SONNET: HAIKU, HAIKU: SONNET}

# One fallback for every model, a fallback per model, or none.
Fallback = str | Mapping[str, str] | None


def fallback_for(model: str, fallback: Fallback) -> str | None:
    """The model to ask when `model` is overloaded; never `model` itself."""
    if fallback is None:
        return None
    chosen = fallback if isinstance(fallback, str) else fallback.get(model)
    return chosen if chosen and chosen != model else None


def models_by_agent(models: Mapping[str, str], agents: Iterable[str]) -> dict[str, str]:
    """The model each agent will ask, as `AgentContext.model_for` resolves it."""
    return {agent: models.get(agent, DEFAULT_MODEL) for agent in agents}


__all__ = ["DEFAULT_FALLBACKS", "DEFAULT_MODEL", "DEFAULT_MODELS", "HAIKU", "SONNET", "Fallback",
           "fallback_for", "models_by_agent"]
