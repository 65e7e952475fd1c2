"""One record through one agent: decode, call the handler, publish what it returns.

Broker-neutral: the Kafka runtime and the in-memory bus both drive `Delivery.handle` and pass
a `Sink`. `handle` returns the broker acknowledgements of everything it published; the caller
commits the record's offset only after awaiting them, so an event's effects are durable before
the event is marked done (at-least-once).

Bad input never raises out of `handle`: it becomes a dead letter, which is itself published
and acknowledged before the offset moves.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson
from opentelemetry.trace import Span, Status, StatusCode

from counterpoint.bus import tracing
from counterpoint.bus.agent import Agent, Cause, Emit, Incoming
from counterpoint.bus.deadletter import Failure, deadletter_headers
from counterpoint.bus.decode import RawRecord, decode
from counterpoint.bus.errors import CounterpointError, UndeclaredEmit, is_retriable
from counterpoint.schemas.envelope import Envelope, derive_event_id, now
from counterpoint.topics.registry import DEADLETTER_NAME

log = logging.getLogger(__name__)

Ack = Awaitable[Any]


class Sink(Protocol):
    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: list[tuple[str, bytes]]) -> Ack:
        """Enqueue a record; the returned awaitable resolves once the broker has it."""
        ...


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        # Full jitter: concurrent retries of one overloaded dependency spread out.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** attempt))


@dataclass
class DeliveryStats:
    handled: int = 0
    emitted: int = 0
    deadlettered: int = 0
    retries: int = 0


class Delivery:
    SOURCE_PREFIX: Final = "/counterpoint/"

    def __init__(self, agent: Agent, sink: Sink, retry: RetryPolicy | None = None) -> None:
        self.agent = agent
        self.sink = sink
        self.retry = retry or RetryPolicy()
        self.stats = DeliveryStats()

    async def handle(self, record: RawRecord) -> list[Ack]:
        topic, handler = self.agent.handlers[record.topic]
        first_failure = now()
        with tracing.process_span(record.topic, record.headers, partition=record.partition,
                                  offset=record.offset, group=self.agent.group_id,
                                  agent=self.agent.name) as span:
            try:
                envelope, data = decode(topic, record)
            except CounterpointError as exc:
                return [await self._deadletter(span, record, Failure(exc, 1, first_failure, now()))]
            _tag_span(span, envelope)
            trace_headers: list[tuple[str, bytes]] = []
            tracing.inject(trace_headers)
            incoming = Incoming(envelope, data, record.topic, record.partition, record.offset,
                                tuple(trace_headers))
            attempt = 0
            while True:
                attempt += 1
                try:
                    emits = await handler(incoming)
                    self._check_declared(emits)
                    break
                except Exception as exc:  # a handler bug must not stop the agent
                    if is_retriable(exc) and attempt < self.retry.max_attempts:
                        self.stats.retries += 1
                        span.add_event("retry", {"attempt": attempt, "error": repr(exc)})
                        await asyncio.sleep(self.retry.delay(attempt))
                        continue
                    log.warning("%s: %s at %s[%d]@%d -> deadletter", self.agent.name,
                                type(exc).__name__, record.topic, record.partition, record.offset)
                    failure = Failure(exc, attempt, first_failure, now())
                    return [await self._deadletter(span, record, failure)]
            self.stats.handled += 1
            return await self.emit(emits, incoming.cause())

    async def emit(self, emits: Sequence[Emit], cause: Cause) -> list[Ack]:
        """Publish `emits` as children of `cause`; ids derive from the cause's id."""
        self._check_declared(emits)
        parent = tracing.extract(cause.trace_headers) if cause.trace_headers else None
        acks: list[Ack] = []
        for item in emits:
            envelope = Envelope(
                id=derive_event_id(item.derive_from or cause.event_id, self.agent.name,
                                   item.topic.name, item.tag),
                source=self.SOURCE_PREFIX + self.agent.name,
                type=item.topic.ce_type,
                time=now(),
                request_id=cause.request_id,
                causation_id=cause.event_id,
                subject=item.subject or cause.subject,
            )
            headers = envelope.to_headers()
            with tracing.send_span(item.topic.name, parent=parent, request_id=cause.request_id,
                                   event_id=envelope.id):
                tracing.inject(headers)
                value = orjson.dumps(item.data.model_dump(mode="json"))
                acks.append(await self.sink.send(item.topic.name, item.key.encode(), value,
                                                 headers))
        self.stats.emitted += len(acks)
        return acks

    def _check_declared(self, emits: Sequence[Emit]) -> None:
        for item in emits:
            if not self.agent.declared(item.topic):
                raise UndeclaredEmit(
                    f"agent {self.agent.name} emitted to {item.topic.name}, which it does not "
                    f"declare (declared: {', '.join(t.name for t in self.agent.emits)})"
                )

    async def _deadletter(self, span: Span, record: RawRecord, failure: Failure) -> Ack:
        span.record_exception(failure.error)
        span.set_status(Status(StatusCode.ERROR, str(failure.error)[:200]))
        span.set_attribute("counterpoint.deadletter.reason", getattr(failure.error, "reason",
                                                                      "handler-error"))
        self.stats.deadlettered += 1
        headers = deadletter_headers(record, failure, agent=self.agent.name,
                                     group=self.agent.group_id)
        return await self.sink.send(DEADLETTER_NAME, record.key, record.value, headers)


def _tag_span(span: Span, envelope: Envelope) -> None:
    span.set_attribute(tracing.REQUEST_ID_ATTR, envelope.request_id)
    span.set_attribute(tracing.EVENT_ID_ATTR, envelope.id)
    span.set_attribute("cloudevents.event_type", envelope.type)
