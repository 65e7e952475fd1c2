"""Adaptive fetching on the embedded broker (bus/fetching.py), seen at the wire.

Tansu holds a fetch that finds nothing for its whole wait and does not answer it early when
records arrive, so consumers that poll keep it busy while nothing happens. Through a wiretap
in front of a real broker: an idle agent sends almost no fetches (it sent one every 10 ms
before), a record published through the bus's producer still reaches it (the producer nudges
it), and a consumer set to long polls keeps fetching as before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from pydantic import BaseModel

from counterpoint.bus.admin import TopicSpec, ensure_topics
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.kafka import FetchMode, KafkaConfig, Producer, run_agent
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.topics.registry import Topic
from tests.support.kafka_wiretap import FETCH, Wiretap, tapped_broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class Item(BaseModel):
    n: int


ITEMS: Topic[Item] = Topic(name="idle.items", ce_type="test.item", event_type=Item,
                           key="request_id", partitions=4)
QUIET_S = 4.0


@pytest.fixture
async def tapped() -> AsyncIterator[tuple[str, Wiretap]]:
    async with tapped_broker() as (bootstrap, tap):
        await ensure_topics(bootstrap, [TopicSpec(ITEMS.name, ITEMS.partitions)])
        yield bootstrap, tap


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _publish(bootstrap: str, n: int) -> None:
    event_id = new_event_id()
    headers = Envelope(id=event_id, source="/test", type=ITEMS.ce_type, time=now(),
                       request_id=event_id).to_headers()
    async with Producer(KafkaConfig(bootstrap), client_id="idle-test") as producer:
        await producer.send(ITEMS.name, orjson.dumps({"n": n}), key=str(n).encode(),
                            headers=headers)


async def _idle_fetches(bootstrap: str, tap: Wiretap, mode: FetchMode) -> tuple[int, list[int]]:
    """Fetches sent by one agent during QUIET_S with nothing to read, and what it handled
    of two records published before and after that quiet."""
    handled: list[int] = []
    agent = Agent(f"idle-test-{mode}", emits=[])

    @agent.handles(ITEMS)
    async def take(event: Incoming[Item]) -> list[Emit]:
        handled.append(event.data.n)
        return []

    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(agent, KafkaConfig(bootstrap, fetch_mode=mode,
                                                            fetch_max_wait_ms=10), stop))
    try:
        await _publish(bootstrap, 1)
        await _until(lambda: 1 in handled, 90, "the first record")
        await asyncio.sleep(1.0)  # the agent's commit and its first idle polls
        before = tap.count(FETCH)
        await asyncio.sleep(QUIET_S)
        fetches = tap.count(FETCH) - before
        await _publish(bootstrap, 2)
        await _until(lambda: 2 in handled, 30, "the record published after the quiet")
        return fetches, handled
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_an_idle_agent_stops_fetching_and_a_nudge_wakes_it(
        tapped: tuple[str, Wiretap]) -> None:
    bootstrap, tap = tapped
    fetches, handled = await _idle_fetches(bootstrap, tap, "auto")
    # Idle polls back off 0.1, 0.2, 0.4 ... 2 s: a handful in 4 s (at 10 ms, about 400).
    assert fetches <= 10, fetches
    assert sorted(handled) == [1, 2]


async def test_long_polls_keep_fetching(tapped: tuple[str, Wiretap]) -> None:
    bootstrap, tap = tapped
    fetches, handled = await _idle_fetches(bootstrap, tap, "long-poll")
    # One every 10 ms on an idle machine (about 400); far fewer when the machine is busy, but
    # still well above what adaptive fetching sends.
    assert fetches >= 25, fetches
    assert sorted(handled) == [1, 2]
