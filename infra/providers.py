"""Choosing the LLM provider for a process.

    ANTHROPIC_API_KEY             set = Claude through the anthropic provider
                                  (agents/llm/anthropic.py); empty or unset = the offline one
    ANTHROPIC_BASE_URL            where the anthropic provider sends its calls
    COUNTERPOINT_MODEL_<AGENT>    model per agent (agents/llm/routing.py has the defaults)
    COUNTERPOINT_FALLBACK_MODEL   model asked when one is overloaded; unset = haiku and sonnet
                                  stand in for each other; `none` = no fallback
    COUNTERPOINT_LLM_TIMEOUT_S    seconds one Claude call may take
    COUNTERPOINT_LLM_FAULT_RATE   > 0 wraps the provider in the fault-injecting test aid
                                  (agents/llm/faults.py); a warning says so at start-up
    COUNTERPOINT_LLM_FAULT_SEED   integer seed for its fault sequence (unset = random)
"""

from __future__ import annotations

import logging

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.llm.anthropic import AnthropicProvider
from counterpoint.agents.llm.faults import FaultyProvider
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.llm.provider import LLMProvider
from counterpoint.agents.llm.routing import DEFAULT_FALLBACKS, Fallback, models_by_agent
from counterpoint.infra.settings import Settings

log = logging.getLogger(__name__)

NO_FALLBACK = frozenset({"none", "off", "false", "0"})


def fallback_of(settings: Settings) -> Fallback:
    configured = settings.fallback_model
    if configured is None:
        return DEFAULT_FALLBACKS
    return None if configured.lower() in NO_FALLBACK else configured


def make_provider(settings: Settings) -> LLMProvider:
    provider: LLMProvider
    if settings.anthropic_api_key:
        # The SDK itself is imported on the first call, so start-up stays fast.
        fallback = fallback_of(settings)
        provider = AnthropicProvider(settings.anthropic_api_key,
                                     base_url=settings.anthropic_base_url, fallback=fallback,
                                     timeout_s=settings.llm_timeout_s)
        routes = models_by_agent(settings.models(), AGENT_NAMES)
        log.info("LLM: Claude (anthropic provider) at %s; models: %s; fallback when "
                 "overloaded: %s", provider.base_url,
                 ", ".join(f"{agent}={model}" for agent, model in routes.items()),
                 _describe(fallback))
    else:
        provider = OfflineProvider()
    if settings.llm_fault_rate > 0:
        seed = settings.llm_fault_seed
        log.warning("FAULT INJECTION ON: COUNTERPOINT_LLM_FAULT_RATE=%s, so about %.0f%% of LLM "
                    "calls will fail on purpose with rate-limit/overload/timeout errors "
                    "(seed %s). This is a test aid; unset it outside tests.",
                    settings.llm_fault_rate, settings.llm_fault_rate * 100,
                    "random" if seed is None else seed)
        provider = FaultyProvider(provider, settings.llm_fault_rate, seed=seed)
    return provider


def _describe(fallback: Fallback) -> str:
    if fallback is None:
        return "none"
    if isinstance(fallback, str):
        return fallback
    return ", ".join(f"{model} -> {stand_in}" for model, stand_in in fallback.items())
