"""An in-memory bus for fast unit tests of agent logic.

It drives the same `Delivery` code as the Kafka runtime, with real encoded records: headers
are bytes, keys pick partitions, each agent's group has its own committed offsets (the
contiguous prefix of done records, holds included), and handler errors become dead letters
exactly as on a broker. `restart` simulates a crash: a fresh agent instance resumes from the
committed offsets, as a new process would. It is never the only proof: the integration tests
run the same agents on a real broker.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from counterpoint.bus.agent import Agent, Cause, Emit, Hold
from counterpoint.bus.checks import check_agent
from counterpoint.bus.commits import PartitionOffsets
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.delivery import Ack, Delivery, RetryPolicy, settle
from counterpoint.topics.topic import (
    DEADLETTER_NAME,
    DEADLETTER_PARTITIONS,
    DEFAULT_PARTITIONS,
    Topic,
)


@dataclass
class _Cursor:
    position: int = 0  # next offset to deliver
    committed: int = 0
    offsets: PartitionOffsets = field(default_factory=PartitionOffsets)


class _Pub:
    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    async def emit(self, emits: Sequence[Emit], cause: Cause,
                   release: Iterable[Hold] = ()) -> None:
        await asyncio.gather(*await self._delivery.emit(emits, cause))
        for hold in release:
            hold.release()


class MemoryBus:
    def __init__(self) -> None:
        # Partition counts come from the declarations of the agents added (as a process
        # creates its topics); a topic nobody declared gets the broker's default.
        self._partitions = {DEADLETTER_NAME: DEADLETTER_PARTITIONS}
        self.log: dict[str, list[list[RawRecord]]] = defaultdict(list)
        self._agents: list[tuple[Agent, Delivery]] = []
        self._cursors: dict[tuple[str, str, int], _Cursor] = defaultdict(_Cursor)

    # --- Sink ---
    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]]) -> Ack:
        parts = self._ensure(topic)
        p = zlib.crc32(key) % len(parts) if key is not None else 0
        record = RawRecord(topic, p, len(parts[p]), key, value, tuple(headers),
                           int(time.time() * 1000))
        parts[p].append(record)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result((p, record.offset))
        return done

    def _ensure(self, topic: str) -> list[list[RawRecord]]:
        if topic not in self.log:
            self.log[topic] = [[] for _ in range(self._partitions.get(topic,
                                                                       DEFAULT_PARTITIONS))]
        return self.log[topic]

    # --- agents ---
    def declare(self, topics: Iterable[Topic[Any]]) -> None:
        for t in topics:
            self._partitions.setdefault(t.name, t.partitions)

    def add(self, agent: Agent, retry: RetryPolicy | None = None) -> Delivery:
        check_agent(agent)  # as a process does when it builds its agent
        self.declare(agent.topics)
        delivery = Delivery(agent, self, retry)
        self._agents.append((agent, delivery))
        return delivery

    def restart(self, old: Agent, new: Agent) -> Delivery:
        """A crash of `old`'s process: `new` resumes from the committed offsets."""
        self._agents = [(a, d) for a, d in self._agents if a is not old]
        for (group, _, _), cursor in self._cursors.items():
            if group == old.group_id:
                cursor.position = cursor.committed
                cursor.offsets = PartitionOffsets()
        return self.add(new)

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> None:
        await self.send(topic, key, value, list(headers))

    async def run_until_idle(self, max_rounds: int = 100) -> int:
        """Deliver until no agent has anything left to read; returns records handled."""
        total = 0
        for _ in range(max_rounds):
            moved = 0
            for agent, delivery in list(self._agents):
                for topic in agent.consumes:
                    for p, records in enumerate(self._ensure(topic.name)):
                        cursor = self._cursors[(agent.group_id, topic.name, p)]
                        for record in records[cursor.position:]:
                            cursor.position = record.offset + 1
                            await self._deliver(delivery, cursor, record)
                            moved += 1
            total += moved
            if not moved:
                return total
        raise RuntimeError(f"bus still busy after {max_rounds} rounds")

    async def _deliver(self, delivery: Delivery, cursor: _Cursor, record: RawRecord) -> None:
        cursor.offsets.track(record.offset)
        outcome = await delivery.handle(record)
        await asyncio.gather(*outcome.acks)
        offsets = cursor.offsets

        def done() -> None:
            offsets.done(record.offset)
            if outcome.event_id:
                delivery.finished(outcome.event_id)
            position = offsets.committable()
            if position is not None and offsets is cursor.offsets:
                cursor.committed = position
                offsets.committed(position)

        settle(outcome, done)

    def committed(self, agent: Agent, topic: str, partition: int) -> int:
        return self._cursors[(agent.group_id, topic, partition)].committed

    async def tick(self, agent: Agent) -> None:
        """Run the agent's periodic tasks once."""
        delivery = next(d for a, d in self._agents if a is agent)
        for _, fn in agent.periodic:
            await fn(_Pub(delivery))

    def records(self, topic: str) -> list[RawRecord]:
        return [r for part in self._ensure(topic) for r in part]
