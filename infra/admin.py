"""Creating topics before anyone consumes them.

The broker's auto-creation on produce picks its own partition count, and a consumer of a
missing topic silently sees nothing, so every command that needs topics calls this first, with
the topics its agents declare (plus `deadletter`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from counterpoint.bus.admin import TopicSpec, ensure_topics
from counterpoint.topics.registry import ALL_TOPICS
from counterpoint.topics.topic import DEADLETTER_NAME, DEADLETTER_PARTITIONS, Topic


def topic_specs(topics: Iterable[Topic[Any]] = ALL_TOPICS) -> list[TopicSpec]:
    specs = [TopicSpec(t.name, t.partitions) for t in topics]
    specs.append(TopicSpec(DEADLETTER_NAME, DEADLETTER_PARTITIONS))
    return specs


async def create_topics(bootstrap_servers: str,
                        topics: Iterable[Topic[Any]] = ALL_TOPICS) -> list[str]:
    """Create the topics (default: the built-in pipeline's) and deadletter; idempotent."""
    return await ensure_topics(bootstrap_servers, topic_specs(topics))
