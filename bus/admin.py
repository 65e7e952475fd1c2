"""Topic administration and broker probing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int = 1


class TopicCreationError(RuntimeError):
    pass


async def ensure_topics(bootstrap_servers: str, specs: Sequence[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Idempotent."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                client_id="counterpoint-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication) for s in missing]
        )
        created, failed = [], []
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:  # another process won the race: fine
                failed.append(f"{name}: error {code} {message or ''}".strip())
        if failed:
            raise TopicCreationError("could not create topics: " + "; ".join(failed))
        return created
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    out = []
    for entry in getattr(response, "topic_errors", []):
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        out.append((str(name), int(code), message))
    return out


async def broker_reachable(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """True when a Kafka-protocol broker answers a metadata request in time."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                client_id="counterpoint-probe",
                                request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
        return True
    except (TimeoutError, KafkaConnectionError, KafkaError, OSError):
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@dataclass(frozen=True)
class PartitionLag:
    """One partition of a consumer group's topic: how far the group is behind its end."""

    topic: str
    partition: int
    committed: int | None  # None: the group has never committed on this partition
    end: int
    lag: int  # end - committed; with nothing committed, every record (from the start) counts


async def group_lag(bootstrap_servers: str, group_id: str,
                    topics: Sequence[str]) -> list[PartitionLag]:
    """Committed and end offsets of `group_id` on every partition of `topics`.

    Read-only: offsets come from an OffsetFetch by the admin client, end and start offsets
    from a group-less consumer, so asking never joins the group or commits anything.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from counterpoint.bus.ends import end_offsets

    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                              enable_auto_commit=False, client_id="counterpoint-status")
    await reader.start()
    try:
        await reader.topics()  # refreshes metadata so partitions_for_topic is filled
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(reader.partitions_for_topic(t) or ())]
        if not partitions:
            return []
        ends = await end_offsets(reader, partitions)
        starts = await reader.beginning_offsets(partitions)
    finally:
        await reader.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                client_id="counterpoint-status")
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id, partitions=partitions)
    finally:
        await admin.close()
    out = []
    for tp in partitions:
        meta = committed.get(tp)
        offset = meta.offset if meta is not None and meta.offset >= 0 else None
        end = ends[tp]
        lag = max(0, end - (offset if offset is not None else starts[tp]))
        out.append(PartitionLag(tp.topic, tp.partition, offset, end, lag))
    return out
