"""Choosing the LLM provider for a process."""

from __future__ import annotations

import logging

from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.infra.settings import Settings

log = logging.getLogger(__name__)


def make_provider(settings: Settings) -> LLMProvider:
    if settings.anthropic_api_key:
        # Honest fallback until the anthropic provider lands: results stay labelled offline.
        log.warning("ANTHROPIC_API_KEY is set, but the anthropic provider is not built yet; "
                    "using the offline provider (results are labelled offline)")
    return OfflineProvider()
