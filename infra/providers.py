"""Choosing the LLM provider for a process.

    COUNTERPOINT_LLM_FAULT_RATE   > 0 wraps the provider in the fault-injecting test aid
                                  (agents/llm/faults.py); a warning says so at start-up
    COUNTERPOINT_LLM_FAULT_SEED   integer seed for its fault sequence (unset = random)
"""

from __future__ import annotations

import logging

from counterpoint.agents.llm.faults import FaultyProvider
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.infra.settings import Settings

log = logging.getLogger(__name__)


def make_provider(settings: Settings) -> LLMProvider:
    if settings.anthropic_api_key:
        # Honest fallback until the anthropic provider lands: results stay labelled offline.
        log.warning("ANTHROPIC_API_KEY is set, but the anthropic provider is not built yet; "
                    "using the offline provider (results are labelled offline)")
    provider: LLMProvider = OfflineProvider()
    if settings.llm_fault_rate > 0:
        seed = settings.llm_fault_seed
        log.warning("FAULT INJECTION ON: COUNTERPOINT_LLM_FAULT_RATE=%s, so about %.0f%% of LLM "
                    "calls will fail on purpose with rate-limit/overload/timeout errors "
                    "(seed %s). This is a test aid; unset it outside tests.",
                    settings.llm_fault_rate, settings.llm_fault_rate * 100,
                    "random" if seed is None else seed)
        provider = FaultyProvider(provider, settings.llm_fault_rate, seed=seed)
    return provider
