"""The Kafka runtime: the only module family that imports aiokafka.

`run_agent` is one agent process's consume loop. It takes a batch, handles each partition's
records in order (partitions concurrently), awaits the broker's acks for everything the
handlers published, and only then commits the batch's offsets. A crash anywhere before the
commit means the batch is delivered again: at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError

from counterpoint.bus.agent import Agent, Cause, Emit
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.delivery import Ack, Delivery, RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    # The embedded broker does not wake a waiting fetch on new data, so each hop costs about
    # this much; real Kafka wakes fetches and only idle polling is bounded by it.
    fetch_max_wait_ms: int = 10
    # Idempotent producers need InitProducerId, which the embedded broker rejects.
    idempotence: bool = False
    linger_ms: int = 0
    max_batch: int = 500
    # Tansu completes a rejoin only after about the departed member's session timeout, so a
    # short one keeps restarts and scale-ups quick; heartbeats run off the processing path.
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_000
    request_timeout_ms: int = 30_000

    def producer(self, client_id: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=self.idempotence,
            linger_ms=self.linger_ms,
            request_timeout_ms=self.request_timeout_ms,
        )


class KafkaSink:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]]) -> Ack:
        ack: Ack = await self._producer.send(topic, value=value, key=key, headers=headers)
        return ack


class _Publisher:
    """Emits outside a handler (timers), waiting for the broker's ack."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    async def emit(self, emits: Sequence[Emit], cause: Cause) -> None:
        acks = await self._delivery.emit(emits, cause)
        await asyncio.gather(*acks)


class _AssignmentLog(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.assigned: set[TopicPartition] = set()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.assigned = set(assigned)
        names = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("%s pid %d assigned %d partitions: %s", self.agent, os.getpid(), len(names),
                 " ".join(names) or "(none)")


def _record(msg: Any) -> RawRecord:
    return RawRecord(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=msg.key,
                     value=msg.value, headers=tuple(msg.headers or ()),
                     timestamp_ms=msg.timestamp or 0)


async def run_agent(agent: Agent, config: KafkaConfig, stop: asyncio.Event,
                    retry: RetryPolicy | None = None) -> Delivery:
    """Consume until `stop` is set, then commit what is done and leave the group cleanly."""
    client_id = f"{agent.name}-{os.getpid()}"
    producer = config.producer(client_id)
    await producer.start()
    delivery = Delivery(agent, KafkaSink(producer), retry)
    assignor = RangePartitionAssignor if agent.assignor == "range" else RoundRobinPartitionAssignor
    consumer = AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=agent.group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        session_timeout_ms=config.session_timeout_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        request_timeout_ms=config.request_timeout_ms,
        partition_assignment_strategy=(assignor,),
    )
    consumer.subscribe([t.name for t in agent.consumes], listener=_AssignmentLog(agent.name))
    timers = [asyncio.create_task(_every(seconds, fn, _Publisher(delivery), stop, agent.name))
              for seconds, fn in agent.periodic]
    try:
        await consumer.start()
        log.info("%s pid %d consuming %s as group %s", agent.name, os.getpid(),
                 ", ".join(t.name for t in agent.consumes), agent.group_id)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=config.max_batch)
            if not batch:
                continue
            acks = await asyncio.gather(
                *(_handle_partition(delivery, records) for records in batch.values())
            )
            await asyncio.gather(*(a for part in acks for a in part))
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            try:
                await consumer.commit(offsets)
            except CommitFailedError:
                # The partitions moved during the batch; their new owner redelivers it.
                log.warning("%s: commit failed after a rebalance; batch will be redelivered",
                            agent.name)
    finally:
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
    return delivery


async def _handle_partition(delivery: Delivery, records: list[Any]) -> list[Ack]:
    acks: list[Ack] = []
    for msg in records:  # in order: events of one key are handled in sequence
        acks.extend(await delivery.handle(_record(msg)))
    return acks


async def _every(seconds: float, fn: Any, publisher: _Publisher, stop: asyncio.Event,
                 agent: str) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        try:
            await fn(publisher)
        except Exception:
            log.exception("%s: periodic task %s failed", agent, getattr(fn, "__name__", fn))


class Producer:
    """A plain publisher for the CLI, the SDK and tests."""

    def __init__(self, config: KafkaConfig, client_id: str = "counterpoint-cli") -> None:
        self._producer = config.producer(client_id)

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None,
                   headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
        """Publish and wait for the broker's ack; returns (partition, offset)."""
        md = await self._producer.send_and_wait(topic, value=value, key=key,
                                                headers=list(headers))
        return md.partition, md.offset


async def tail(config: KafkaConfig, topics: Sequence[str], *, from_beginning: bool = True,
               follow: bool = False, idle_timeout_s: float = 1.0) -> AsyncGenerator[RawRecord]:
    """Read topics without a consumer group (so readers never steal work from agents).

    Without `follow`, stops once every partition has been read to its end.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=config.bootstrap_servers,
                                enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=config.fetch_max_wait_ms)
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata so partitions_for_topic is filled
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        ends = await consumer.end_offsets(partitions) if not follow else {}
        while True:
            if not follow and await _all_read(consumer, ends):
                return
            batch = await consumer.getmany(timeout_ms=int(idle_timeout_s * 1000))
            for records in batch.values():
                for msg in records:
                    yield _record(msg)
    finally:
        await consumer.stop()


async def _all_read(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def is_kafka_error(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError)
