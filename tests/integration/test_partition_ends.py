"""End offsets must count the whole last record batch.

Tansu answers ListOffsets(latest) with the last batch's base offset + 1, so lag computed from
it (`counterpoint status`, the chaos test's diagnosis) was short by up to a batch, and a
follower starting "at the end" re-read the last batch. These batches come from librdkafka with
a linger, so several records share one batch, as they do when an agent publishes under load.
"""

from __future__ import annotations

import uuid
from contextlib import aclosing

import pytest

from counterpoint.bus.admin import TopicSpec, ensure_topics, group_lag
from counterpoint.bus.kafka import tail
from tests.integration.helpers import config

pytestmark = pytest.mark.integration


def _produce_batches(bootstrap: str, topic: str, sizes: list[int]) -> int:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    count = 0
    for size in sizes:
        for _ in range(size):
            producer.produce(topic, value=f"r{count}".encode(), partition=0)
            count += 1
        producer.flush(10)  # one flush per size: the records of a size share a batch
    return count


async def test_tail_reads_every_record_of_the_last_batch(bootstrap: str) -> None:
    topic = f"ends-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1)])
    total = _produce_batches(bootstrap, topic, [1, 5, 1, 7])

    async with aclosing(tail(config(bootstrap), [topic])) as stream:
        values = [r.value async for r in stream]

    assert values == [f"r{n}".encode() for n in range(total)]


async def test_lag_counts_the_whole_last_batch(bootstrap: str) -> None:
    topic = f"ends-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1)])
    total = _produce_batches(bootstrap, topic, [3, 6])

    [lag] = await group_lag(bootstrap, f"nobody-{uuid.uuid4().hex[:6]}", [topic])

    assert (lag.end, lag.lag) == (total, total)
