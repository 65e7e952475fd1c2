"""A relay agent process for bus-level chaos: items -> relayed, through the real bus engine.

    python -m tests.support.relay_agent BOOTSTRAP

Each record is held for a random moment (0-300 ms) so many are in flight when a process is
killed, stopped or joined by another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import sys

from pydantic import BaseModel

from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.kafka import KafkaConfig, run_agent
from counterpoint.topics.registry import Topic


class Item(BaseModel):
    n: int
    key: str


PARTITIONS = 8
ITEMS: Topic[Item] = Topic(name="relay.items", ce_type="test.item", event_type=Item,
                           key="request_id", partitions=PARTITIONS)
RELAYED: Topic[Item] = Topic(name="relay.relayed", ce_type="test.item", event_type=Item,
                             key="request_id", partitions=PARTITIONS)


def build() -> Agent:
    agent = Agent("relay-chaos", emits=[RELAYED])

    @agent.handles(ITEMS)
    async def on_item(event: Incoming[Item]) -> list[Emit]:
        await asyncio.sleep(random.uniform(0, 0.3))
        return [Emit(RELAYED, event.data, key=event.data.key)]

    return agent


async def main(bootstrap: str) -> None:
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {os.getpid()} %(name)s %(message)s")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await run_agent(build(), KafkaConfig(bootstrap_servers=bootstrap), stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
