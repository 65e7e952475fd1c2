"""Bench-only topics and the relay agent built on them.

The bus works with any `Topic`, so the relay declares its own (`<prefix>.hop0` ..
`<prefix>.hop3`) instead of touching the product's registry. Every run uses a fresh prefix, so
repeated runs against one broker never read each other's records.
"""

from __future__ import annotations

from pydantic import BaseModel

from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.topics.registry import Topic

HOPS = 3
PARTITIONS = 4


class BenchEvent(BaseModel):
    """What travels through the relay: a sequence number and its wall-clock send time."""

    seq: int
    sent_at: float


def relay_topics(prefix: str, hops: int = HOPS) -> list[Topic[BenchEvent]]:
    """hop0 (the driver's input) .. hop<hops> (what the sink reads)."""
    return [
        Topic(name=f"{prefix}.hop{i}", ce_type=f"counterpoint.bench.hop{i}",
              event_type=BenchEvent, key="request_id", partitions=PARTITIONS,
              description=f"bench relay input of hop {i}" if i < hops else "bench relay sink")
        for i in range(hops + 1)
    ]


def relay_agent(prefix: str, hop: int, hops: int = HOPS) -> Agent:
    """One hop: consume `hop<i>`, emit the same event to `hop<i+1>`, keyed by request id."""
    topics = relay_topics(prefix, hops)
    source, target = topics[hop], topics[hop + 1]
    agent = Agent(f"{prefix}.hop{hop}", emits=[target])

    @agent.handles(source)
    async def relay(event: Incoming[BenchEvent]) -> list[Emit]:
        return [Emit(target, event.data, key=event.request_id)]

    return agent
