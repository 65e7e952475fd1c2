"""The Kafka runtime: the only module family that imports aiokafka.

`run_agent` is one agent process's consume loop. Records are handled concurrently (bounded),
in order per key, and a record counts as done only once the broker acknowledged everything its
handler published; the committed offset never passes an unfinished record. A crash anywhere
before the commit means redelivery: at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import struct
import sys
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError, MessageSizeTooLargeError
from aiokafka.protocol.metadata import MetadataRequest

from counterpoint.bus import metrics
from counterpoint.bus.agent import Agent, Cause, Emit, Hold
from counterpoint.bus.commits import PartitionOffsets
from counterpoint.bus.decode import InputLimits, RawRecord
from counterpoint.bus.delivery import Ack, Delivery, RetryPolicy, settle
from counterpoint.bus.ends import end_offsets
from counterpoint.bus.errors import TooLarge
from counterpoint.bus.fetching import Adaptive, LongPoll, sleep_until
from counterpoint.bus.wake import Listener, Nudger

log = logging.getLogger(__name__)

FetchMode = Literal["auto", "adaptive", "long-poll"]
# Per mode, when not configured: Kafka's own default for long polls; for adaptive fetching only
# a fetch that finds nothing waits this long (bus/fetching.py).
DEFAULT_FETCH_WAIT_MS: dict[str, int] = {"adaptive": 5, "long-poll": 500}
# Session timeouts when not configured. Tansu (the embedded broker) answers a JoinGroup only
# once half the group's session timeout has passed, checking once a second (so 1 s at least),
# and completes a rejoin after about a departed member's timeout: with 6 s every agent's start
# waited 3 s. It never evicts a group's only member for lateness (the member's own request
# refreshes it first), so 2 s costs an unscaled agent nothing, and a scaled one a rebalance
# only after its event loop stalled for longer than that. Kafka refuses timeouts below its
# group.min.session.timeout.ms, 6 s by default.
TANSU_SESSION_TIMEOUT_MS = 2_000
KAFKA_SESSION_TIMEOUT_MS = 6_000
# Heartbeats, when not configured: a third of the session timeout (Kafka's advice: two may be
# missed), at most 1 s; on Tansu half of it. Every heartbeat costs the agent and the broker
# CPU: at a third of 2 s, the ten resting agents' heartbeats took the idle stack from 4.0-4.4%
# to 4.7-5.1% of a core (idle bench, back-to-back runs). On Tansu only a scaled agent can be
# evicted, and now after one heartbeat over a second late instead of two.
HEARTBEATS_PER_SESSION = {True: 2, False: 3}  # by tansu


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str
    # "auto": adaptive on a broker that does not wake waiting fetches (the embedded broker,
    # Tansu, recognised by its cluster id), long polls otherwise. See bus/fetching.py.
    fetch_mode: FetchMode = "auto"
    fetch_max_wait_ms: int | None = None  # None: DEFAULT_FETCH_WAIT_MS of the mode
    # Adaptive mode: the longest wait between two fetches of an idle consumer (for publishers
    # that do not nudge); it starts at 0.1 s after records and doubles while nothing comes.
    idle_poll_max_ms: int = 2_000
    # Idempotent producers need InitProducerId, which the embedded broker rejects.
    idempotence: bool = False
    # A LeaveGroup lets the group rebalance at once instead of after the session timeout. Off
    # by default: on the embedded broker, a group leader that leaves while a rebalance is under
    # way stays recorded as leader and the group never forms again (see _stay_until_expiry).
    leave_group: bool = False
    linger_ms: int = 0
    max_batch: int = 500
    # None: by broker (group_timeouts). Heartbeats run off the processing path.
    session_timeout_ms: int | None = None
    heartbeat_interval_ms: int | None = None  # None: a third of the session timeout, <= 1 s
    request_timeout_ms: int = 30_000
    max_in_flight: int = 64  # handlers running at once
    # Records fetched and not yet done (handlers running, or published and waiting for the
    # broker's acks); at least max_in_flight. Records waiting for acks cost little, and a
    # bound of a few batches lets fetching, handling and acknowledgements overlap.
    max_pending: int = 2_000
    # Also the rebalance timeout a group waits for members to rejoin: a member killed in the
    # middle of a rebalance holds its group up this long. Polling never stops (fetching is
    # paused instead), so this bounds only a stuck event loop.
    max_poll_interval_ms: int = 20_000
    # Anything the broker accepted must be publishable again as a dead letter, so this is
    # well above the input limit (the broker and the deadletter topic have their own caps).
    max_request_size: int = 16 * 1_048_576
    # Bytes per partition batch of the producer. aiokafka's 16 KiB default holds only ~40 of our
    # records (their CloudEvents headers are most of each), and a send that finds its batch full
    # waits until that batch is drained, in a wait every other blocked send wakes up from too:
    # with hundreds of records in flight that cost more CPU than the records themselves. Kept
    # well below the 1 MB a Kafka broker accepts per batch by default (message.max.bytes).
    max_batch_bytes: int = 256 * 1024
    commit_interval_s: float = 0.05
    # On revocation and shutdown, in-flight work gets this long before it is abandoned.
    drain_grace_s: float = 10.0

    def group_timeouts(self, tansu: bool) -> tuple[int, int]:
        """(session timeout, heartbeat interval) in ms for a consumer of this broker."""
        session = self.session_timeout_ms or (TANSU_SESSION_TIMEOUT_MS if tansu
                                              else KAFKA_SESSION_TIMEOUT_MS)
        return session, (self.heartbeat_interval_ms
                         or min(1_000, session // HEARTBEATS_PER_SESSION[tansu]))

    def producer(self, client_id: str) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=self.idempotence,
            linger_ms=self.linger_ms,
            request_timeout_ms=self.request_timeout_ms,
            max_request_size=self.max_request_size,
            max_batch_size=self.max_batch_bytes,
            partitioner=partitioner,
        )


_M: Final = 0x5BD1E995


def _words(data: bytes, end: int) -> Iterable[int]:
    """The little-endian 32-bit words of data[:end] (end a multiple of 4)."""
    if sys.byteorder == "little":
        return memoryview(data)[:end].cast("I")
    return struct.unpack(f"<{end >> 2}I", data[:end])


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key (Java's Utils.murmur2, unsigned), as aiokafka's own, which
    partitions every keyed record and cost more per record than the bus's header handling;
    the same arithmetic on whole words, masked once per step."""
    length = len(data)
    h = 0x9747B28C ^ length
    end = length & ~3
    for k in _words(data, end):
        k = (k * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ (((k ^ (k >> 24)) * _M) & 0xFFFFFFFF)
    extra = length & 3
    if extra:
        if extra == 3:
            h ^= data[end + 2] << 16
        if extra >= 2:
            h ^= data[end + 1] << 8
        h = ((h ^ data[end]) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


# Keys repeat (every event of a request is keyed by its request id): hashes of recent ones.
_hashes: dict[bytes, int] = {}
_HASHES_MAX: Final = 4096


def partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's DefaultPartitioner (the Java client's choice for a key), faster."""
    if key is None:
        return random.choice(available or all_partitions)
    h = _hashes.get(key)
    if h is None:
        if len(_hashes) >= _HASHES_MAX:
            _hashes.clear()
        h = _hashes[key] = murmur2(key)
    return all_partitions[(h & 0x7FFFFFFF) % len(all_partitions)]


@dataclass(frozen=True)
class BrokerInfo:
    """What a broker says about itself; decides how consumers fetch from it."""

    cluster_id: str
    nodes: tuple[str, ...]  # advertised host:port of every broker, sorted

    @property
    def identity(self) -> str:
        """The same string in every process that talks to this broker, whatever address it
        was given (nudges are addressed by it)."""
        return f"{self.cluster_id}@{','.join(self.nodes)}"

    @property
    def wakes_fetches(self) -> bool:
        return not self.cluster_id.startswith("tansu")


async def broker_info(client: AIOKafkaClient) -> BrokerInfo:
    """Ask the broker (aiokafka keeps the cluster id of its metadata to itself)."""
    response = await client.send(client.get_random_node(), MetadataRequest([]))
    cluster_id = getattr(response, "cluster_id", None) or ""
    nodes = tuple(sorted(f"{host}:{port}" for _, host, port, *_ in response.brokers))
    return BrokerInfo(cluster_id, nodes)


@dataclass(frozen=True)
class FetchPlan:
    """How this process fetches from its broker, resolved from the config and the broker."""

    adaptive: bool
    fetch_max_wait_ms: int
    broker: str  # BrokerInfo.identity
    tansu: bool = False  # the broker is Tansu (KafkaConfig.group_timeouts)

    @property
    def mode(self) -> str:
        return "adaptive" if self.adaptive else "long-poll"


async def fetch_plan(config: KafkaConfig, client: AIOKafkaClient) -> FetchPlan:
    try:
        info = await broker_info(client)
    except KafkaError as exc:
        log.warning("could not ask the broker what it is (%s); fetching with long polls", exc)
        info = BrokerInfo("", (config.bootstrap_servers,))
    adaptive = (config.fetch_mode == "adaptive"
                or (config.fetch_mode == "auto" and not info.wakes_fetches))
    mode = "adaptive" if adaptive else "long-poll"
    wait = config.fetch_max_wait_ms
    return FetchPlan(adaptive, DEFAULT_FETCH_WAIT_MS[mode] if wait is None else wait,
                     info.identity, tansu=not info.wakes_fetches)


class KafkaSink:
    def __init__(self, producer: AIOKafkaProducer, nudger: Nudger | None = None) -> None:
        self._producer = producer
        self._nudger = nudger

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]]) -> Ack:
        try:
            ack: asyncio.Future[Any] = await self._producer.send(topic, value=value, key=key,
                                                                 headers=headers)
        except MessageSizeTooLargeError as exc:
            raise TooLarge(f"{topic}: record of {len(value or b''):,} bytes refused by the "
                           f"producer: {exc}") from exc
        if self._nudger is not None:
            nudge_when_acked(ack, self._nudger, topic)
        return ack


def nudge_when_acked(ack: asyncio.Future[Any], nudger: Nudger, topic: str) -> None:
    """Nudge `topic`'s local consumers once `ack` (a produce) succeeded."""
    def acked(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            nudger.nudge(topic)

    ack.add_done_callback(acked)


class _Publisher:
    """Emits outside a handler (timers), waiting for the broker's ack before releasing."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery

    async def emit(self, emits: Sequence[Emit], cause: Cause,
                   release: Iterable[Hold] = ()) -> None:
        acks = await self._delivery.emit(emits, cause)
        await asyncio.gather(*acks)
        for hold in release:
            hold.release()


def _record(msg: Any) -> RawRecord:
    return RawRecord(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                     tuple(msg.headers or ()), msg.timestamp or 0)


class _Engine:
    """Many records in flight, one key at a time, commits only below the oldest unfinished.

    Each fetched record's handler runs in a task chained after the previous record of the
    same (partition, key), so events of one key are handled in order while other keys
    proceed. A record is done once its handler
    returned and the broker acknowledged everything it published; the next record of its key
    starts only then. At most `max_in_flight`
    handlers run, and at most `max_pending` records are fetched and not yet done; fetching
    stops while either bound is reached.

    The acknowledgements are followed by callbacks, not by the handler's task: a relay's
    handler returns at once and its task ends, so the bound on handlers does not hold fetching
    back while the broker acknowledges a whole batch.
    """

    def __init__(self, agent: Agent, delivery: Delivery, consumer: AIOKafkaConsumer,
                 config: KafkaConfig) -> None:
        self.agent = agent
        self.delivery = delivery
        self.consumer = consumer
        self.config = config
        self.offsets: dict[TopicPartition, PartitionOffsets] = {}
        # Per partition, the completion of every record fetched and not yet done: set once it
        # is done or has failed (a failure is the engine's: `failure`).
        self.tasks: dict[TopicPartition, set[asyncio.Future[None]]] = {}
        self.handlers: dict[asyncio.Future[None], asyncio.Task[None]] = {}
        self.tails: dict[tuple[TopicPartition, bytes], asyncio.Future[None]] = {}
        self.in_flight = 0  # records fetched and not yet done
        self.handling = 0  # of those, records whose handler has not returned yet
        self.progress = asyncio.Event()  # set whenever a record is done or a handler returns
        self.failure: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        metrics.watch_loop(self)

    def topic_attributes(self, topic: str | None) -> metrics.Attributes:
        return self.delivery.topic_attributes(topic)

    def free(self) -> int:
        """How many records may be fetched now."""
        return min(self.config.max_in_flight - self.handling,
                   max(self.config.max_pending, self.config.max_in_flight) - self.in_flight)

    def lag(self) -> list[tuple[str, int, int]]:
        """Records waiting to be fetched per assigned partition: the high watermark of the
        last fetch response minus the position of the next record handed to this engine.

        Not the committed offset: records a join holds open on purpose (approvals waiting
        for a person) keep commits back for hours without anything being stuck.
        Called from a metrics reader's thread, so it reads state and never awaits.
        """
        found = []
        try:
            assignment = self.consumer._subscription.subscription.assignment
            for tp in list(assignment.tps):
                state = assignment.state_value(tp)
                if state.highwater is not None and state.has_valid_position:
                    found.append((tp.topic, tp.partition, max(0, state.highwater - state.position)))
        except Exception:  # a rebalance under way; or an aiokafka that keeps it elsewhere
            log.debug("%s: no lag this time", self.agent.name, exc_info=True)
        return found

    def start(self, msg: Any) -> None:
        tp = TopicPartition(msg.topic, msg.partition)
        offsets = self.offsets.get(tp)
        if offsets is None:
            offsets = self.offsets[tp] = PartitionOffsets()
        offsets.track(msg.offset)
        completion: asyncio.Future[None] = self._loop.create_future()
        chain = (tp, msg.key) if msg.key is not None else None
        previous = None
        if chain is not None:
            previous = self.tails.get(chain)
            if previous is not None and previous.done():
                previous = None
            self.tails[chain] = completion
        pending = self.tasks.get(tp)
        if pending is None:
            pending = self.tasks[tp] = set()
        pending.add(completion)
        self.in_flight += 1
        self.handling += 1
        # A task per record, not an eager first step: code a handler runs before its first
        # wait (asyncio.timeout, anyio's cancel scopes) binds itself to the current task.
        self.handlers[completion] = self._loop.create_task(
            self._run(offsets, _record(msg), previous, completion, tp, chain))

    def _settled(self, completion: asyncio.Future[None], tp: TopicPartition,
                 chain: tuple[TopicPartition, bytes] | None) -> None:
        """The record is done, failed or abandoned: the next of its key may start."""
        if completion.done():
            return
        completion.set_result(None)
        self.in_flight -= 1
        pending = self.tasks.get(tp)
        if pending is not None:
            pending.discard(completion)
        if chain is not None and self.tails.get(chain) is completion:
            del self.tails[chain]
        self.progress.set()

    def _failed(self, completion: asyncio.Future[None], tp: TopicPartition,
                chain: tuple[TopicPartition, bytes] | None, exc: BaseException | None) -> None:
        """The record cannot be done (it stays open, so it is redelivered): a failed publish
        stops the engine; an abandoned (cancelled) record does not."""
        if exc is not None and self.failure is None:
            self.failure = exc
        self._settled(completion, tp, chain)

    async def _run(self, offsets: PartitionOffsets, record: RawRecord,
                   previous: asyncio.Future[None] | None, completion: asyncio.Future[None],
                   tp: TopicPartition, chain: tuple[TopicPartition, bytes] | None) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # order within a key; its failure is its own
            outcome = await self.delivery.handle(record)
        except asyncio.CancelledError:
            self._failed(completion, tp, chain, None)
            raise
        except Exception as exc:
            self._failed(completion, tp, chain, exc)
            return
        finally:
            self.handling -= 1
            if self.handlers:
                self.handlers.pop(completion, None)
            self.progress.set()

        def done() -> None:
            offsets.done(record.offset)
            if outcome.event_id:
                self.delivery.finished(outcome.event_id)

        acks = outcome.acks
        if not acks:
            settle(outcome, done)
            self._settled(completion, tp, chain)
            return
        left = len(acks)

        def acked(ack: asyncio.Future[Any]) -> None:
            nonlocal left
            if completion.done():
                return  # an earlier ack failed, or the record was abandoned
            if ack.cancelled() or ack.exception() is not None:
                # A failed publish: the record stays open.
                self._failed(completion, tp, chain,
                             None if ack.cancelled() else ack.exception())
                return
            left -= 1
            if left == 0:
                settle(outcome, done)
                self._settled(completion, tp, chain)

        for ack in acks:
            asyncio.ensure_future(ack).add_done_callback(acked)

    async def commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        wanted = set(only) if only is not None else set(self.offsets)
        offsets = {}
        for tp in wanted:
            tracker = self.offsets.get(tp)
            position = tracker.committable() if tracker else None
            if position is not None:
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except CommitFailedError:
            # The partitions moved on; their new owner redelivers what was not committed.
            log.warning("%s: commit failed after a rebalance; records will be redelivered",
                        self.agent.name)
            return
        for tp, position in offsets.items():
            if tp in self.offsets:
                self.offsets[tp].committed(position)

    async def drain(self, partitions: Iterable[TopicPartition], grace_s: float) -> None:
        """Let in-flight work of `partitions` finish for `grace_s`, then abandon the rest.

        Abandoned records are not committed, so whoever owns the partition next redoes them.
        """
        pending = {c for tp in partitions for c in self.tasks.get(tp, ())}
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace_s)
        if not late:
            return
        handlers = [t for c in late if (t := self.handlers.get(c)) is not None]
        for task in handlers:
            task.cancel()
        log.warning("%s: abandoned %d unfinished records (redelivered later)",
                    self.agent.name, len(late))
        if handlers:
            await asyncio.wait(handlers)
        for completion in late:  # those waiting for acks: they stay open
            if self.handlers.pop(completion, None) is not None:
                self.handling -= 1  # its task was cancelled before it ran: _run never started
            self._abandoned(completion)

    def _abandoned(self, completion: asyncio.Future[None]) -> None:
        tp = next((tp for tp, pending in self.tasks.items() if completion in pending), None)
        chain = next((chain for chain, tail in self.tails.items() if tail is completion), None)
        if tp is None:  # already settled
            return
        self._failed(completion, tp, chain, None)

    async def revoke(self, partitions: set[TopicPartition]) -> None:
        await self.drain(partitions, self.config.drain_grace_s)
        await self.commit(partitions)
        for tp in partitions:
            self.offsets.pop(tp, None)
            self.tasks.pop(tp, None)
        for key in [k for k in self.tails if k[0] in partitions]:
            del self.tails[key]
        lost = {(tp.topic, tp.partition) for tp in partitions}
        for hook in self.agent.revoked_hooks:
            hook(lost)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.engine: _Engine | None = None
        self.fetching: Adaptive | LongPoll | None = None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.engine is not None and revoked:
            await self.engine.revoke(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        names = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)
        log.info("%s pid %d assigned %d partitions: %s", self.agent, os.getpid(), len(names),
                 " ".join(names) or "(none)")
        if self.fetching is not None:
            self.fetching.wake()  # new partitions may hold a backlog


def _consumer(config: KafkaConfig, plan: FetchPlan, agent: Agent,
              client_id: str) -> AIOKafkaConsumer:
    assignor = RangePartitionAssignor if agent.assignor == "range" else RoundRobinPartitionAssignor
    session_timeout_ms, heartbeat_interval_ms = config.group_timeouts(plan.tansu)
    return AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap_servers,
        group_id=agent.group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=plan.fetch_max_wait_ms,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        request_timeout_ms=config.request_timeout_ms,
        partition_assignment_strategy=(assignor,),
        max_poll_interval_ms=config.max_poll_interval_ms,
        # The fetcher's own wake-up when it has nothing to do; resuming a partition wakes it
        # anyway, so a long one only saves idle wake-ups.
        consumer_timeout_ms=1_000,
    )


async def run_agent(agent: Agent, config: KafkaConfig, stop: asyncio.Event,
                    retry: RetryPolicy | None = None,
                    limits: InputLimits | None = None) -> Delivery:
    """Consume until `stop` is set, then finish or abandon in-flight work, commit what is
    done and leave the group cleanly."""
    client_id = f"{agent.name}-{os.getpid()}"
    producer = config.producer(client_id)
    await producer.start()
    plan = await fetch_plan(config, producer.client)
    nudger = Nudger(plan.broker) if plan.adaptive else None
    delivery = Delivery(agent, KafkaSink(producer, nudger), retry, limits)
    consumer = _consumer(config, plan, agent, client_id)
    topics = [t.name for t in agent.consumes]
    listener = _Rebalance(agent.name)
    consumer.subscribe(topics, listener=listener)
    engine = _Engine(agent, delivery, consumer, config)
    listener.engine = engine
    wake = Listener(plan.broker, topics) if plan.adaptive else None
    timers = [asyncio.create_task(_every(seconds, fn, _Publisher(delivery), stop, agent.name))
              for seconds, fn in agent.periodic]
    try:
        await consumer.start()
        if not config.leave_group:
            _stay_until_expiry(consumer)
        fetching: Adaptive | LongPoll | None = None
        if wake is not None:
            wake.open()
            fetching = Adaptive.attach(consumer, wake, plan.fetch_max_wait_ms,
                                       config.idle_poll_max_ms / 1000)
        fetching = fetching or LongPoll(consumer)
        listener.fetching = fetching
        settle_heap()
        log.info("%s pid %d consuming %s as group %s (up to %d in flight; %s fetching)",
                 agent.name, os.getpid(), ", ".join(topics), agent.group_id,
                 config.max_in_flight, plan.mode)
        await _consume(engine, consumer, fetching, config, stop)
        await engine.drain(list(engine.tasks), config.drain_grace_s)
        await engine.commit(consumer.assignment())
    finally:
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        for task in list(engine.handlers.values()):
            task.cancel()
        if wake is not None:
            wake.close()
        await consumer.stop()
        await producer.stop()
        if nudger is not None:
            nudger.close()
    return delivery


# Allocations (net of frees) between two young-generation collections; CPython's default is 700.
GC_YOUNG_THRESHOLD: Final = 50_000


def settle_heap() -> None:
    """Keep the garbage collector off the hot path of a long-running consume loop.

    With CPython's defaults a relay burst spent ~58 us of its ~130 us per record in collections
    (measured with gc.callbacks): each record allocates ~20 containers, records in flight live
    long enough to reach the old generation, and every full collection then walks the whole
    start-up heap (aiokafka, pydantic, OpenTelemetry: hundreds of thousands of objects). What
    exists once the agent has started lives as long as the process, so it is frozen out of
    collections, and young collections run every 50,000 allocations instead of 700: during a
    burst the records fetched ahead and in flight are most of what is young, and a collection
    finds them all alive (10,000 still cost 8-14 us per record). Reference counting frees
    almost everything anyway; what waits for a collection is at most a few MB of cycles.
    """
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


async def _consume(engine: _Engine, consumer: AIOKafkaConsumer, fetching: Adaptive | LongPoll,
                   config: KafkaConfig, stop: asyncio.Event) -> None:
    last_commit = last_poll = time.monotonic()
    wakers = [stop, engine.progress]
    if isinstance(fetching, Adaptive):
        wakers.append(fetching.listener.event)
    while not stop.is_set():
        if engine.failure is not None:
            raise engine.failure
        free = min(engine.free(), config.max_batch)
        if free <= 0:
            # At the bound: wake as soon as a record finishes. Fetching is paused, and an
            # empty poll now and then keeps the consumer a live member of its group.
            fetching.interrupted()
            engine.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(engine.progress.wait(), timeout=0.1)
            if time.monotonic() - last_poll >= 1.0:
                consumer.pause(*consumer.assignment())
                await consumer.getmany(timeout_ms=0)
                last_poll = time.monotonic()
        elif fetching.idle():
            # Nothing to fetch: sleep until a nudge, the next idle poll, a finished record
            # (to commit it) or stop.
            engine.progress.clear()
            pending = any(t.committable() is not None for t in engine.offsets.values())
            timeout = fetching.seconds_to_poll()
            if pending:
                timeout = min(timeout, config.commit_interval_s)
            await sleep_until(wakers, timeout)
        else:
            batch = await fetching.fetch(free)
            last_poll = time.monotonic()
            for records in batch.values():
                for msg in records:
                    engine.start(msg)
        if time.monotonic() - last_commit >= config.commit_interval_s:
            await engine.commit(consumer.assignment())
            last_commit = time.monotonic()


def _stay_until_expiry(consumer: AIOKafkaConsumer) -> None:
    """Never send LeaveGroup: this member leaves its group by session expiry.

    Tansu (the embedded broker) removes a leaving member but keeps it as the group's leader
    when the group is rebalancing at that moment (a new member joining); as only the leader
    may assign, the group never forms again and its partitions go unconsumed until the broker
    restarts (reproduced: 9 stuck groups in 14 rounds; 0 in 8 without LeaveGroup). A member
    that merely stops answering is evicted at session expiry, which does clear the leader.
    aiokafka sends LeaveGroup on stop() and after max_poll_interval_ms without a poll; both go
    through the coordinator's `_maybe_leave_group`, replaced here by its local half.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "_maybe_leave_group"):
        log.warning("cannot turn off LeaveGroup on this aiokafka version; a member leaving "
                    "during a rebalance may leave the embedded broker's group stuck")
        return

    async def reset_only() -> None:
        coordinator.reset_generation()

    coordinator._maybe_leave_group = reset_only


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
        self._config = config
        self._producer = config.producer(client_id)
        self._nudger: Nudger | None = None

    async def __aenter__(self) -> Producer:
        await self._producer.start()
        try:
            plan = await fetch_plan(self._config, self._producer.client)
        except BaseException:
            await self._producer.stop()
            raise
        if plan.adaptive:
            self._nudger = Nudger(plan.broker)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()
        if self._nudger is not None:
            self._nudger.close()

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None,
                   headers: Sequence[tuple[str, bytes]] = (),
                   partition: int | None = None) -> tuple[int, int]:
        """Publish and wait for the broker's ack; returns (partition, offset)."""
        md = await self._producer.send_and_wait(topic, value=value, key=key,
                                                headers=list(headers), partition=partition)
        if self._nudger is not None:
            self._nudger.nudge(topic)
        return md.partition, md.offset


async def probe_plan(config: KafkaConfig) -> FetchPlan:
    """The fetch plan for `config`'s broker, asked over a connection of its own."""
    client = AIOKafkaClient(bootstrap_servers=config.bootstrap_servers,
                            request_timeout_ms=config.request_timeout_ms)
    try:
        await client.bootstrap()
        return await fetch_plan(config, client)
    finally:
        await client.close()


async def tail(config: KafkaConfig, topics: Sequence[str], *, from_beginning: bool = True,
               follow: bool = False, idle_timeout_s: float = 1.0) -> AsyncGenerator[RawRecord]:
    """Read topics without a consumer group (so readers never steal work from agents).

    Without `follow`, stops once every partition has been read to its end (checked at least
    every `idle_timeout_s` while fetching with long polls).
    """
    plan = await probe_plan(config)
    consumer = AIOKafkaConsumer(bootstrap_servers=config.bootstrap_servers,
                                enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=plan.fetch_max_wait_ms,
                                consumer_timeout_ms=1_000)
    wake = Listener(plan.broker, topics) if plan.adaptive and follow else None
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata so partitions_for_topic is filled
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await end_offsets(consumer, partitions) if not (follow and from_beginning) else {}
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            for tp, offset in ends.items():
                consumer.seek(tp, offset)
        if follow:
            ends = {}
        fetching: Adaptive | LongPoll | None = None
        if wake is not None:
            wake.open()
            fetching = Adaptive.attach(consumer, wake, plan.fetch_max_wait_ms,
                                       config.idle_poll_max_ms / 1000)
        fetching = fetching or LongPoll(consumer, int(idle_timeout_s * 1000))
        while True:
            if not follow and await _all_read(consumer, ends):
                return
            if fetching.idle():
                assert wake is not None
                await sleep_until([wake.event], fetching.seconds_to_poll())
                continue
            batch = await fetching.fetch(config.max_batch)
            for records in batch.values():
                for msg in records:
                    yield _record(msg)
    finally:
        if wake is not None:
            wake.close()
        await consumer.stop()


async def _all_read(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True


def is_kafka_error(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError)
