"""The Kafka runtime's engine with a stub consumer: concurrency, order per key, commits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.delivery import Delivery
from counterpoint.bus.kafka import KafkaConfig, _Engine
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.events import Ticket
from counterpoint.topics.registry import INTAKE_TICKETS

TOPIC = INTAKE_TICKETS.name


@dataclass
class Msg:
    """What aiokafka's consumer returns, as far as the engine reads it."""

    offset: int
    key: bytes | None
    value: bytes
    topic: str = TOPIC
    partition: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 1


@dataclass
class StubConsumer:
    commits: list[dict[Any, int]] = field(default_factory=list)

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))


def ticket(offset: int, key: str, slow: float = 0.0) -> Msg:
    body = {"id": f"T-{offset}", "body": f"slow={slow}"}
    return Msg(offset, key.encode(), orjson.dumps(body))


def make_engine(delays: dict[str, float], log: list[str],
                grace_s: float = 5.0) -> tuple[_Engine, StubConsumer]:
    agent = Agent("probe", emits=[])

    @agent.handles(INTAKE_TICKETS)
    async def handle(event: Incoming[Ticket]) -> list[Emit]:
        log.append(f"start {event.data.id}")
        await asyncio.sleep(delays.get(event.data.id, 0.0))
        log.append(f"end {event.data.id}")
        return []

    consumer = StubConsumer()
    engine = _Engine(agent, Delivery(agent, MemoryBus()), consumer,  # type: ignore[arg-type]
                     KafkaConfig("unused:9092", drain_grace_s=grace_s))
    return engine, consumer


async def settle(engine: _Engine) -> None:
    while engine.in_flight:
        engine.progress.clear()
        await engine.progress.wait()


async def test_one_key_in_order_other_keys_overtake() -> None:
    log: list[str] = []
    engine, _ = make_engine({"T-0": 0.2}, log)
    engine.start(ticket(0, "a"))  # slow
    engine.start(ticket(1, "a"))  # same key: must wait for offset 0
    engine.start(ticket(2, "b"))  # other key: runs now
    assert engine.in_flight == 3
    await settle(engine)
    assert log.index("end T-2") < log.index("end T-0")  # b overtook the slow a
    assert log.index("end T-0") < log.index("start T-1")  # a stayed in order


async def test_commits_never_pass_an_unfinished_offset() -> None:
    log: list[str] = []
    engine, consumer = make_engine({"T-0": 0.3}, log)
    for offset, key in enumerate("abcd"):
        engine.start(ticket(offset, key))
    await asyncio.sleep(0.1)  # 1..3 are done, 0 is still running
    await engine.commit()
    assert consumer.commits == []  # nothing contiguous from the start is done yet
    await settle(engine)
    await engine.commit()
    (committed,) = consumer.commits[-1].values()
    assert committed == 4


async def test_drain_abandons_late_work_and_commits_only_what_finished() -> None:
    log: list[str] = []
    engine, consumer = make_engine({"T-1": 30.0}, log, grace_s=0.2)
    engine.start(ticket(0, "a"))
    engine.start(ticket(1, "b"))  # would take 30 s
    engine.start(ticket(2, "c"))
    await asyncio.sleep(0.05)
    await engine.drain(list(engine.tasks), engine.config.drain_grace_s)
    await engine.commit()
    assert "end T-1" not in log  # abandoned
    (committed,) = consumer.commits[-1].values()
    assert committed == 1  # 0 is done; 1 was abandoned, so 2 must wait for redelivery too
    assert engine.in_flight == 0


async def test_a_failed_publish_stops_the_engine_and_keeps_the_record_open() -> None:
    agent = Agent("probe", emits=[INTAKE_TICKETS])

    @agent.handles(INTAKE_TICKETS)
    async def echo(event: Incoming[Ticket]) -> list[Emit]:
        return [Emit(INTAKE_TICKETS, event.data, key="k")]

    class BrokenSink:
        async def send(self, *args: object) -> asyncio.Future[None]:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker gone"))
            return failed

    consumer = StubConsumer()
    engine = _Engine(agent, Delivery(agent, BrokenSink()), consumer,  # type: ignore[arg-type]
                     KafkaConfig("unused:9092"))
    engine.start(ticket(0, "a"))
    await settle(engine)
    await engine.commit()
    assert isinstance(engine.failure, ConnectionError)
    assert consumer.commits == []


def test_settle_heap_freezes_start_up_objects_and_collects_young_ones_less_often() -> None:
    import gc

    from counterpoint.bus.kafka import GC_YOUNG_THRESHOLD, settle_heap

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, before[1], before[2])
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        gc.set_threshold(200_000, before[1], before[2])
        settle_heap()  # a process that chose a higher threshold keeps it
        assert gc.get_threshold()[0] == 200_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_partitioner_picks_what_the_java_client_and_aiokafka_pick() -> None:
    import random

    from aiokafka.partitioner import DefaultPartitioner
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2

    from counterpoint.bus.kafka import murmur2, partitioner

    rng = random.Random(14)
    default = DefaultPartitioner()
    for length in range(64):
        for _ in range(50):
            key = rng.randbytes(length)
            assert murmur2(key) == aiokafka_murmur2(key)
            partitions = list(range(rng.randint(1, 48)))
            assert partitioner(key, partitions, partitions) == default(key, partitions,
                                                                       partitions)
    # Known values of Kafka's own murmur2 (its Java test suite, as signed ints).
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"foobar") == -790332482 & 0xFFFFFFFF
    assert murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    assert partitioner(None, [0, 1, 2], [2]) == 2  # no key: an available partition


async def test_each_record_runs_in_a_context_of_its_own() -> None:
    import contextvars

    current: contextvars.ContextVar[str | None] = contextvars.ContextVar("current", default=None)
    seen: list[tuple[str, str | None]] = []
    agent = Agent("probe", emits=[])

    @agent.handles(INTAKE_TICKETS)
    async def handle(event: Incoming[Ticket]) -> list[Emit]:
        seen.append((event.data.id, current.get()))
        current.set(event.data.id)
        await asyncio.sleep(0.01)
        seen.append((f"{event.data.id} again", current.get()))
        return []

    consumer = StubConsumer()
    engine = _Engine(agent, Delivery(agent, MemoryBus()), consumer,  # type: ignore[arg-type]
                     KafkaConfig("unused:9092"))
    for offset, key in enumerate("abc"):
        engine.start(ticket(offset, key))
    await settle(engine)
    assert current.get() is None  # nothing leaked into the consume loop's context
    assert sorted(seen) == [("T-0", None), ("T-0 again", "T-0"), ("T-1", None),
                            ("T-1 again", "T-1"), ("T-2", None), ("T-2 again", "T-2")]
    await engine.commit()
    (committed,) = consumer.commits[-1].values()
    assert committed == 3


async def test_a_record_abandoned_before_its_task_ran_frees_its_place() -> None:
    log: list[str] = []
    engine, consumer = make_engine({}, log, grace_s=0.0)
    engine.start(ticket(0, "a"))
    (task,) = engine.handlers.values()
    task.cancel()  # before it ran a step (shutdown can do this): _run never starts
    await asyncio.gather(task, return_exceptions=True)
    await engine.drain(list(engine.tasks), 0.0)
    assert "end T-0" not in log
    assert (engine.handling, engine.in_flight, engine.handlers) == (0, 0, {})
    assert engine.free() == engine.config.max_in_flight
    await engine.commit()
    assert consumer.commits == []  # abandoned, not done: redelivered later


async def test_a_handler_runs_as_its_own_task_from_its_first_step_on() -> None:
    """asyncio.timeout (and anyio's cancel scopes) bind to the current task when entered: a
    handler's must be its own, never the consume loop's, also before its first wait."""
    outcomes: dict[str, str] = {}
    tasks: dict[str, asyncio.Task[Any] | None] = {}
    agent = Agent("probe", emits=[])

    @agent.handles(INTAKE_TICKETS)
    async def handle(event: Incoming[Ticket]) -> list[Emit]:
        tasks[event.data.id] = asyncio.current_task()
        try:
            async with asyncio.timeout(0.01 if event.data.id == "T-0" else 5):
                await asyncio.sleep(0.05)
            outcomes[event.data.id] = "slept"
        except TimeoutError:
            outcomes[event.data.id] = "timed out"
        assert asyncio.current_task() is tasks[event.data.id]
        return []

    consumer = StubConsumer()
    engine = _Engine(agent, Delivery(agent, MemoryBus()), consumer,  # type: ignore[arg-type]
                     KafkaConfig("unused:9092"))
    loop_task = asyncio.current_task()
    engine.start(ticket(0, "a"))
    engine.start(ticket(1, "b"))
    assert asyncio.current_task() is loop_task
    await settle(engine)  # the consume loop's own task was not cancelled by T-0's timeout
    assert outcomes == {"T-0": "timed out", "T-1": "slept"}
    assert loop_task not in tasks.values() and tasks["T-0"] is not tasks["T-1"]
    assert loop_task is not None and loop_task.cancelling() == 0
