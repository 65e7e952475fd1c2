"""Reading and writing the test broker from the test process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import aclosing, suppress
from typing import Any

from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, Producer, tail
from counterpoint.schemas.envelope import Envelope
from counterpoint.schemas.events import Result
from counterpoint.topics.registry import DEADLETTER_NAME, SYNTHESIS_RESULTS


def config(bootstrap: str) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)


async def send_raw(bootstrap: str, topic: str, value: bytes, *, key: bytes | None = None,
                   headers: Sequence[tuple[str, bytes]] = ()) -> tuple[int, int]:
    async with Producer(config(bootstrap), client_id="tests") as producer:
        return await producer.send(topic, value, key=key, headers=headers)


async def collect(bootstrap: str, topic: str, done: Callable[[list[RawRecord]], bool],
                  timeout_s: float) -> list[RawRecord]:
    """Follow `topic` from the beginning until `done(records)` or the timeout."""
    records: list[RawRecord] = []

    async def follow() -> None:
        async with aclosing(tail(config(bootstrap), [topic], follow=True,
                                 idle_timeout_s=0.2)) as stream:
            async for record in stream:
                records.append(record)
                if done(records):
                    return

    with suppress(TimeoutError):
        await asyncio.wait_for(follow(), timeout=timeout_s)
    return records


async def read_all(bootstrap: str, topic: str) -> list[RawRecord]:
    """Every record of `topic` up to each partition's end offset when called (its true high
    watermark, bus/ends.py): complete however slowly the machine reads, unlike a timed follow."""
    async with aclosing(tail(config(bootstrap), [topic])) as stream:
        return [record async for record in stream]


def results(records: list[RawRecord]) -> list[tuple[Envelope, Result]]:
    out = []
    for r in records:
        env = Envelope.from_headers(r.headers)
        assert env is not None and r.value is not None
        out.append((env, SYNTHESIS_RESULTS.decode(r.value)))
    return out


async def wait_results(bootstrap: str, match: Callable[[Result], bool], count: int = 1,
                       timeout_s: float = 60.0) -> list[Result]:
    """Distinct results (by event id) matching `match`; waits until `count` have arrived."""
    def found(records: list[RawRecord]) -> dict[str, Result]:
        return {e.id: res for e, res in results(records) if match(res)}

    records = await collect(bootstrap, SYNTHESIS_RESULTS.name,
                            lambda rs: len(found(rs)) >= count, timeout_s)
    return list(found(records).values())


async def wait_deadletters(bootstrap: str, match: Callable[[DeadLetter], bool], count: int,
                           timeout_s: float = 30.0) -> list[DeadLetter]:
    def found(records: list[RawRecord]) -> list[DeadLetter]:
        return [d for d in map(DeadLetter.from_record, records) if match(d)]

    records = await collect(bootstrap, DEADLETTER_NAME, lambda rs: len(found(rs)) >= count,
                            timeout_s)
    return found(records)


def any_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values
