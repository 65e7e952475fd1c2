"""An in-memory bus for fast unit tests of agent logic.

It drives the same `Delivery` code as the Kafka runtime, with real encoded records: headers
are bytes, keys pick partitions, each agent's group has its own committed offsets, and handler
errors become dead letters exactly as on a broker. It is never the only proof: the
integration tests run the same agents on a real broker.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from counterpoint.bus.agent import Agent, Cause, Emit
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.delivery import Ack, Delivery
from counterpoint.topics.registry import ALL_TOPICS, DEADLETTER_NAME, DEADLETTER_PARTITIONS


class MemoryBus:
    def __init__(self) -> None:
        self._partitions = {t.name: t.partitions for t in ALL_TOPICS}
        self._partitions[DEADLETTER_NAME] = DEADLETTER_PARTITIONS
        self.log: dict[str, list[list[RawRecord]]] = defaultdict(list)
        self._agents: list[tuple[Agent, Delivery]] = []
        self._committed: dict[tuple[str, str, int], int] = defaultdict(int)

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
            self.log[topic] = [[] for _ in range(self._partitions.get(topic, 4))]
        return self.log[topic]

    # --- agents ---
    def add(self, agent: Agent) -> Delivery:
        delivery = Delivery(agent, self)
        self._agents.append((agent, delivery))
        return delivery

    async def publish(self, topic: str, value: bytes, *, key: bytes | None = None,
                      headers: Sequence[tuple[str, bytes]] = ()) -> None:
        await self.send(topic, key, value, list(headers))

    async def run_until_idle(self, max_rounds: int = 100) -> int:
        """Deliver until no agent has anything left to read; returns records handled."""
        total = 0
        for _ in range(max_rounds):
            moved = 0
            for agent, delivery in self._agents:
                for topic in agent.consumes:
                    for p, records in enumerate(self._ensure(topic.name)):
                        pos = self._committed[(agent.group_id, topic.name, p)]
                        for record in records[pos:]:
                            await asyncio.gather(*await delivery.handle(record))
                            self._committed[(agent.group_id, topic.name, p)] = record.offset + 1
                            moved += 1
            total += moved
            if not moved:
                return total
        raise RuntimeError(f"bus still busy after {max_rounds} rounds")

    async def tick(self, agent: Agent) -> None:
        """Run the agent's periodic tasks once."""
        delivery = next(d for a, d in self._agents if a is agent)

        class _Pub:
            async def emit(self, emits: Sequence[Emit], cause: Cause) -> None:
                await asyncio.gather(*await delivery.emit(emits, cause))

        for _, fn in agent.periodic:
            await fn(_Pub())

    def records(self, topic: str) -> list[RawRecord]:
        return [r for part in self._ensure(topic) for r in part]
