"""Memory: remembers what every finished request came to, for the next one.

Consumes: synthesis.results (Result) — each final reply or runbook
Emits:    nothing; records the outcome in the outcome store (agents/outcomes.py), which
          synthesis reads for the next request of the same customer or service

Recording is an idempotent upsert by request id, committed only after it is written, so a
crash before the commit records the same row again on redelivery.
"""

from __future__ import annotations

import asyncio
from typing import Any

from counterpoint.agents.context import AgentContext
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.schemas.events import Result
from counterpoint.topics.registry import SYNTHESIS_RESULTS, Topic

EMITS: tuple[Topic[Any], ...] = ()


def build(ctx: AgentContext) -> Agent:
    agent = Agent("memory", emits=EMITS)
    ctx.outcomes.check()  # a memory.db Counterpoint did not make stops the build, unchanged

    @agent.handles(SYNTHESIS_RESULTS)
    async def on_result(event: Incoming[Result]) -> list[Emit]:
        result = event.data
        customer_id = result.customer_id or (result.customer or {}).get("customer_id")
        await asyncio.to_thread(ctx.outcomes.record, result,
                                str(customer_id) if customer_id else None, result.service)
        return []

    return agent
