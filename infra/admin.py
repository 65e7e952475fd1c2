"""Creating the registry's topics before anyone consumes them.

The broker's auto-creation on produce picks its own partition count, and a consumer of a
missing topic silently sees nothing, so every command that needs topics calls this first.
"""

from __future__ import annotations

from counterpoint.bus.admin import TopicSpec, ensure_topics
from counterpoint.topics.registry import ALL_TOPICS, DEADLETTER_NAME, DEADLETTER_PARTITIONS


def topic_specs() -> list[TopicSpec]:
    specs = [TopicSpec(t.name, t.partitions) for t in ALL_TOPICS]
    specs.append(TopicSpec(DEADLETTER_NAME, DEADLETTER_PARTITIONS))
    return specs


async def create_topics(bootstrap_servers: str) -> list[str]:
    return await ensure_topics(bootstrap_servers, topic_specs())
