"""When a consumer fetches: all the time (a broker that wakes waiting fetches), or only when
there may be something new (the embedded broker, which does not).

Kafka answers a waiting fetch as soon as records arrive, so a long `fetch_max_wait_ms` costs
nothing and loses no time: `LongPoll` fetches continuously. Tansu holds a fetch that found
nothing for its whole wait, so there a short wait means polling (about 1 ms of broker CPU per
fetch, a core for ten agents at 10 ms) and a long one means latency. `Adaptive` therefore fetches
only after a nudge (bus/wake.py: a publisher on this host saw its record acked), while the last
fetch left records behind, or on an idle poll that backs off from `MIN_POLL_S` to the configured
maximum (for publishers that do not nudge). Between those it pauses every partition, so no
fetch is waiting at the broker when a nudge comes: the next one is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from counterpoint.bus.wake import Listener

log = logging.getLogger(__name__)

Batch = dict[TopicPartition, list[Any]]

# First idle poll after activity; each empty one doubles the wait up to the configured maximum.
MIN_POLL_S: Final = 0.1


class LongPoll:
    """Fetch continuously; the broker holds each fetch until records arrive."""

    def __init__(self, consumer: AIOKafkaConsumer, timeout_ms: int = 100) -> None:
        self.consumer = consumer
        self.timeout_ms = timeout_ms  # how long one round waits for records

    def idle(self) -> bool:
        return False

    def wake(self) -> None:
        pass

    def seconds_to_poll(self) -> float:
        return 0.0

    async def fetch(self, max_records: int) -> Batch:
        if self.consumer.paused():
            self.consumer.resume(*self.consumer.paused())
        batch: Batch = await self.consumer.getmany(timeout_ms=self.timeout_ms,
                                                   max_records=max_records)
        return batch

    def interrupted(self) -> None:
        pass


class _FetchTracker:
    """Counts the consumer's fetch requests: which were sent, which came back, which with data.

    aiokafka has no public hook for this; it wraps the fetcher's per-request coroutine.
    """

    def __init__(self, fetcher: Any) -> None:
        self.sent = 0
        self.done = 0  # highest sequence number answered
        self.with_data = 0
        self.changed = asyncio.Event()
        original = fetcher._proc_fetch_request

        async def tracked(assignment: Any, node_id: int, request: Any) -> bool:
            self.sent += 1
            seq = self.sent
            got = False
            try:
                got = bool(await original(assignment, node_id, request))
            finally:
                self.done = max(self.done, seq)
                if got:
                    self.with_data += 1
                self.changed.set()
            return got

        fetcher._proc_fetch_request = tracked

    async def answered_since(self, sent: int, with_data: int, timeout_s: float) -> None:
        """Until a fetch sent after `sent` was answered or any fetch brought records."""
        deadline = time.monotonic() + timeout_s
        while self.done <= sent and self.with_data <= with_data:
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


class Adaptive:
    """Fetch while there is something to fetch; otherwise pause and wait for a nudge or a poll."""

    def __init__(self, consumer: AIOKafkaConsumer, listener: Listener, tracker: _FetchTracker,
                 fetch_max_wait_ms: int, max_poll_s: float) -> None:
        self.consumer = consumer
        self.listener = listener
        self._tracker = tracker
        # A fetch answers within its wait plus a round trip; beyond this something is slow
        # (a loaded machine), and the records it brings are picked up on the next round.
        self._answer_timeout_s = fetch_max_wait_ms / 1000 + 0.5
        self._max_poll_s = max_poll_s
        self._step_s = MIN_POLL_S
        self._next_poll = 0.0
        self.caught_up = False
        self.rounds = 0  # fetch rounds, for the bench and tests

    @classmethod
    def attach(cls, consumer: AIOKafkaConsumer, listener: Listener, fetch_max_wait_ms: int,
               max_poll_s: float) -> Adaptive | None:
        """None when this aiokafka cannot be tracked; the caller then polls continuously."""
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "_proc_fetch_request"):
            log.warning("cannot follow this aiokafka version's fetches; fetching continuously "
                        "(on the embedded broker that keeps a core busy while idle)")
            return None
        return cls(consumer, listener, _FetchTracker(fetcher), fetch_max_wait_ms, max_poll_s)

    def idle(self) -> bool:
        """Caught up, not nudged, and no poll due: nothing to fetch now."""
        return (self.caught_up and not self.listener.event.is_set()
                and time.monotonic() < self._next_poll)

    def wake(self) -> None:
        """Fetch on the next round (new partitions, or fetching was stopped for another reason)."""
        self.caught_up = False
        self.listener.event.set()

    def seconds_to_poll(self) -> float:
        return max(0.0, self._next_poll - time.monotonic())

    def interrupted(self) -> None:
        """Fetching was paused for another reason: look again before idling."""
        self.caught_up = False

    async def fetch(self, max_records: int) -> Batch:
        self.rounds += 1
        self.listener.event.clear()  # before the fetch: a nudge from now on means look again
        sent, with_data = self._tracker.sent, self._tracker.with_data
        consumer = self.consumer
        if consumer.paused():
            consumer.resume(*consumer.paused())
        batch: Batch = await consumer.getmany(timeout_ms=0, max_records=max_records)
        if not batch:
            await self._tracker.answered_since(sent, with_data, self._answer_timeout_s)
            batch = await consumer.getmany(timeout_ms=0, max_records=max_records)
        self.caught_up = await self._at_end()
        if self.caught_up:
            # Now, before the fetcher runs again: no fetch goes out until the next round.
            consumer.pause(*consumer.assignment())
        # Records reset the idle poll to its shortest step; each empty round doubles it.
        self._step_s = MIN_POLL_S if batch else min(self._step_s * 2, self._max_poll_s)
        self._next_poll = time.monotonic() + self._step_s
        return batch

    async def _at_end(self) -> bool:
        """Every assigned partition was read up to the high watermark its last fetch reported."""
        consumer = self.consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                return False
            if await consumer.position(tp) < highwater:
                return False
        return True


async def sleep_until(events: list[asyncio.Event], timeout_s: float) -> None:
    """Until one of `events` is set or `timeout_s` passed."""
    if any(e.is_set() for e in events) or timeout_s <= 0:
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
