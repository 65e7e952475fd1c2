"""Agents leave their group by session expiry, never LeaveGroup, on the embedded broker.

Tansu removes a member that sends LeaveGroup while its group is rebalancing but keeps it as
the group's leader; only the leader may assign, so the group never forms again and its
partitions go unconsumed until the broker restarts. Reproduced with bare aiokafka: a third
member joins a group of two, the leader stops cleanly as the newcomer rejoins, and 9 rounds
in 14 stayed stuck for the whole round (one for 300 s); without LeaveGroup 0 in 8.

Members here are real aiokafka consumers of the bus (`run_agent`) against a real embedded
broker that advertises a wiretap's address, so the test sees every request they send.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
import pytest
from pydantic import BaseModel

from counterpoint.bus.admin import TopicSpec, ensure_topics
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.kafka import KafkaConfig, Producer, run_agent
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.topics.registry import Topic
from tests.support.kafka_wiretap import (
    JOIN_GROUP,
    LEAVE_GROUP,
    SYNC_GROUP,
    Wiretap,
    tapped_broker,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class Item(BaseModel):
    n: int


PARTITIONS = 4
ITEMS: Topic[Item] = Topic(name="leave.items", ce_type="test.item", event_type=Item,
                           key="request_id", partitions=PARTITIONS)


@dataclass
class Member:
    """One consumer of the test group, in this process."""

    config: KafkaConfig
    handled: list[int] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[object] | None = None

    def start(self) -> Member:
        agent = Agent("leave-test", emits=[])

        @agent.handles(ITEMS)
        async def on_item(event: Incoming[Item]) -> list[Emit]:
            self.handled.append(event.data.n)
            return []

        self.task = asyncio.create_task(run_agent(agent, self.config, self.stop))
        return self

    async def stop_cleanly(self, timeout_s: float = 60) -> None:
        self.stop.set()
        assert self.task is not None
        try:
            await asyncio.wait_for(self.task, timeout_s)
        except TimeoutError:
            # A member of a stuck group cannot finish leaving: aiokafka's stop waits for its
            # join loop. Cancelled, so a failing test fails instead of hanging.
            raise AssertionError(f"the member did not stop within {timeout_s:.0f}s") from None


@pytest.fixture
async def tapped() -> AsyncIterator[tuple[str, Wiretap]]:
    async with tapped_broker() as (bootstrap, tap):
        await ensure_topics(bootstrap, [TopicSpec(ITEMS.name, PARTITIONS)])
        yield bootstrap, tap


def _config(bootstrap: str, leave_group: bool = False) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=bootstrap, leave_group=leave_group)


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


async def _two_members_past_first_generation(bootstrap: str, tap: Wiretap,
                                             leave_group: bool) -> tuple[Member, Member]:
    # aiokafka sends no LeaveGroup from generation 0, Tansu's first: a second member makes
    # the group rebalance, so both are in generation 1 afterwards.
    first = Member(_config(bootstrap, leave_group)).start()
    await _until(lambda: tap.count(SYNC_GROUP) >= 1, 60, "the first member's assignment")
    second = Member(_config(bootstrap, leave_group)).start()
    await _until(lambda: tap.count(SYNC_GROUP) >= 3, 60, "both members' assignments")
    return first, second


async def _publish(bootstrap: str, count: int) -> None:
    async with Producer(_config(bootstrap), client_id="leave-test") as producer:
        for n in range(count):
            eid = new_event_id()
            env = Envelope(id=eid, source="/tests", type=ITEMS.ce_type, time=now(),
                           request_id=eid)
            await producer.send(ITEMS.name, orjson.dumps({"n": n}), key=None,
                                headers=env.to_headers(), partition=n % PARTITIONS)


@pytest.mark.parametrize("leave_group", [False, True])
async def test_a_stopping_agent_sends_leave_group_only_when_configured(
        tapped: tuple[str, Wiretap], leave_group: bool) -> None:
    bootstrap, tap = tapped
    first, second = await _two_members_past_first_generation(bootstrap, tap, leave_group)
    before = tap.count(LEAVE_GROUP)
    await first.stop_cleanly()
    leaves = tap.count(LEAVE_GROUP) - before
    await second.stop_cleanly()
    assert leaves == (1 if leave_group else 0), f"{leaves} LeaveGroup requests"


async def test_the_group_forms_again_when_members_stop_while_another_joins(
        tapped: tuple[str, Wiretap]) -> None:
    """The pattern that left Tansu groups stuck: members (the leader among them) stop while
    a new member is joining. With the defaults the newcomer gets every partition."""
    bootstrap, tap = tapped
    first, second = await _two_members_past_first_generation(bootstrap, tap, False)
    opened = tap.connections
    newcomer = Member(_config(bootstrap)).start()
    # Its first JoinGroup gets a member id from the broker; the second joins with it.
    await _until(lambda: tap.count(JOIN_GROUP, since_connection=opened) >= 2, 60,
                 "the newcomer to join with its member id")
    await asyncio.sleep(0.3)
    await asyncio.gather(first.stop_cleanly(), second.stop_cleanly())
    await _publish(bootstrap, 2 * PARTITIONS)
    try:
        await _until(lambda: len(set(newcomer.handled)) == 2 * PARTITIONS, 90,
                     "the newcomer to handle a record of every partition")
    finally:
        with contextlib.suppress(AssertionError):
            await newcomer.stop_cleanly(timeout_s=15)
