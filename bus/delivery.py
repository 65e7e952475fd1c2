"""One record through one agent: decode, call the handler, publish what it returns.

Broker-neutral: the Kafka runtime and the in-memory bus both drive `Delivery.handle` and pass
a `Sink`. `handle` returns an `Outcome`: the broker acknowledgements of everything it published, and
whether the handler holds its record open. The caller marks the record done only after
awaiting the acks (and after a hold is released), and commits only done records, so an event's
effects are durable before the event is marked done (at-least-once). Finished event ids are
remembered, so a redelivered event is skipped instead of handled twice.

Bad input never raises out of `handle`: it becomes a dead letter, which is itself published
and acknowledged before the offset moves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from opentelemetry.trace import Span, Status, StatusCode

from counterpoint.bus import metrics, tracing
from counterpoint.bus.agent import Agent, Cause, Emit, Handler, Hold, Incoming, Settlement
from counterpoint.bus.checks import checked_emits
from counterpoint.bus.deadletter import Failure, deadletter_headers
from counterpoint.bus.decode import InputLimits, RawRecord, decode
from counterpoint.bus.errors import CounterpointError, TooLarge, is_retriable, reason_of
from counterpoint.bus.metrics import Attributes, DeliveryStats, bump
from counterpoint.schemas.envelope import (
    Envelope,
    binary_headers,
    derive_event_id,
    now,
    now_text,
)
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
    """Bounds for retriable failures: whichever of attempts or time runs out first."""

    max_attempts: int = 5
    max_seconds: float = 60.0
    base_delay_s: float = 0.2
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        # Full jitter: concurrent retries of one overloaded dependency spread out.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** attempt))


@dataclass
class Outcome:
    acks: list[Ack] = field(default_factory=list)
    hold: Hold | None = None  # the record stays unfinished until this is released
    release: list[Hold] = field(default_factory=list)  # to release once `acks` are in
    event_id: str | None = None


def settle(outcome: Outcome, done: Callable[[], None]) -> None:
    """After `outcome.acks` are in: the record is done now, or when its hold is released;
    then the holds it was waiting to release are released."""
    if outcome.hold is None:
        done()
    else:
        outcome.hold.attach(lambda _hold: done())
    for hold in outcome.release:
        hold.release()


def _moment(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


REMEMBERED: Final = 50_000  # finished event ids kept for duplicate suppression


class Delivery:
    SOURCE_PREFIX: Final = "/counterpoint/"

    def __init__(self, agent: Agent, sink: Sink, retry: RetryPolicy | None = None,
                 limits: InputLimits | None = None) -> None:
        self.agent = agent
        self.sink = sink
        self.retry = retry or RetryPolicy()
        self.limits = limits or InputLimits()
        self.stats = DeliveryStats()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._attributes: dict[str | None, Attributes] = {}
        self._source = self.SOURCE_PREFIX + agent.name
        metrics.watch(self)

    def topic_attributes(self, topic: str | None) -> Attributes:
        """This agent's metric attributes for `topic` (built once: recorded per record)."""
        attrs = self._attributes.get(topic)
        if attrs is None:
            attrs = {"messaging.system": "kafka",
                     "messaging.consumer.group.name": self.agent.group_id,
                     metrics.AGENT_ATTR: self.agent.name}
            if topic is not None:
                attrs["messaging.destination.name"] = topic
            self._attributes[topic] = attrs
        return attrs

    def finished(self, event_id: str) -> None:
        """Remember a finished event: its effects are durable, a redelivery can be skipped."""
        finished = self._finished
        if event_id in finished:
            finished.move_to_end(event_id)
            return
        finished[event_id] = None
        while len(finished) > REMEMBERED:
            finished.popitem(last=False)

    async def handle(self, record: RawRecord) -> Outcome:
        topic, handler = self.agent.handlers[record.topic]
        bump(self.stats.consumed, record.topic)
        started_at = time.time()  # a datetime only if it fails: this runs for every record
        decoded: tuple[Envelope, Any] | None = None
        error: CounterpointError | None = None
        try:
            decoded = decode(topic, record, self.limits)
        except CounterpointError as exc:
            error = exc
        if not tracing.recording():
            return await self._handle(record, handler, decoded, error, started_at, None,
                                      tracing.forwarded(record.headers))
        envelope = decoded[0] if decoded is not None else None
        with tracing.Consuming(record.topic, record.headers,
                               self._span_attributes(record, envelope)) as span:
            return await self._handle(record, handler, decoded, error, started_at, span,
                                      tracing.carry(span))

    async def _handle(self, record: RawRecord, handler: Handler,
                      decoded: tuple[Envelope, Any] | None, error: CounterpointError | None,
                      started_at: float, span: Span | None,
                      trace_headers: tracing.TraceHeaders) -> Outcome:
        if decoded is None:
            assert error is not None
            failure = Failure(error, 1, _moment(started_at), now())
            return Outcome([await self._deadletter(span, record, failure)])
        envelope, data = decoded
        if envelope.id in self._finished:
            bump(self.stats.duplicates, record.topic)
            if span is not None:
                span.set_attribute("counterpoint.duplicate", True)
            return Outcome(event_id=envelope.id)
        incoming = Incoming(envelope, data, record.topic, record.partition, record.offset,
                            trace_headers)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                incoming = replace(incoming, settlement=Settlement())  # a retry starts clean
            try:
                emits = checked_emits(self.agent, await handler(incoming))
                break
            except Exception as exc:  # a handler bug must not stop the agent
                # A rate limit that says when to come back is honoured.
                delay = max(self.retry.delay(attempt), getattr(exc, "retry_after", 0) or 0)
                if (is_retriable(exc) and attempt < self.retry.max_attempts
                        and time.monotonic() - started + delay < self.retry.max_seconds):
                    bump(self.stats.retried, record.topic)
                    if span is not None:
                        span.add_event("retry", {"attempt": attempt, "error": repr(exc)})
                    # Sleeps in this key's own task: other keys keep flowing.
                    await asyncio.sleep(delay)
                    continue
                log.warning("%s: %s at %s[%d]@%d -> deadletter", self.agent.name,
                            type(exc).__name__, record.topic, record.partition, record.offset)
                attrs = dict(self.topic_attributes(record.topic))
                attrs["error.type"] = type(exc).__qualname__
                metrics.process_duration.record(time.monotonic() - started, attrs)
                failure = Failure(exc, attempt, _moment(started_at), now())
                return Outcome([await self._deadletter(span, record, failure)])
        metrics.process_duration.record(time.monotonic() - started,
                                        self.topic_attributes(record.topic))
        bump(self.stats.handled, record.topic)
        acks = await self._publish(emits, incoming.cause())
        settled = incoming.settlement
        return Outcome(acks, settled.hold, settled.release, envelope.id)

    def _span_attributes(self, record: RawRecord, envelope: Envelope | None,
                         ) -> dict[str, str | int]:
        attrs = tracing.messaging_attributes(record.topic, partition=record.partition,
                                             offset=record.offset, group=self.agent.group_id)
        attrs[tracing.AGENT_ATTR] = self.agent.name
        attrs["messaging.operation.type"] = "process"
        if envelope is not None:
            attrs[tracing.REQUEST_ID_ATTR] = envelope.request_id
            attrs[tracing.EVENT_ID_ATTR] = envelope.id
            attrs["cloudevents.event_type"] = envelope.type
        return attrs

    async def emit(self, emits: Sequence[Emit], cause: Cause) -> list[Ack]:
        """Publish `emits` as children of `cause`; ids derive from the cause's id."""
        return await self._publish(checked_emits(self.agent, emits), cause)

    async def _publish(self, emits: Sequence[Emit], cause: Cause) -> list[Ack]:
        recording = tracing.recording()
        parent = (tracing.context_of(cause.trace_headers)
                  if recording and cause.trace_headers else None)
        source = self._source
        acks: list[Ack] = []
        for item in emits:
            request_id = item.request_id or cause.request_id
            event_id = derive_event_id(item.derive_from or cause.event_id, self.agent.name,
                                       item.topic.name, item.tag)
            headers = binary_headers(event_id, source, item.topic.ce_type, now_text(), request_id,
                                     causation_id=cause.event_id,
                                     subject=item.subject or cause.subject)
            span = None
            if recording:
                span = tracing.start_send(item.topic.name, parent, request_id, event_id)
                tracing.inject_span(headers, span, parent)
            else:
                headers.extend(cause.trace_headers)
            try:
                value = item.data.__pydantic_serializer__.to_json(item.data)
                acks.append(await self.sink.send(item.topic.name, item.key.encode(), value,
                                                 headers))
            finally:
                if span is not None:
                    span.end()
            bump(self.stats.sent, item.topic.name)
        return acks

    async def _deadletter(self, span: Span | None, record: RawRecord, failure: Failure) -> Ack:
        reason = reason_of(failure.error)
        if span is not None:
            span.record_exception(failure.error)
            span.set_status(Status(StatusCode.ERROR, str(failure.error)[:200]))
            span.set_attribute("counterpoint.deadletter.reason", reason)
        key = (record.topic, reason)
        self.stats.deadlettered[key] = self.stats.deadlettered.get(key, 0) + 1
        headers = deadletter_headers(record, failure, agent=self.agent.name,
                                     group=self.agent.group_id)
        try:
            return await self.sink.send(DEADLETTER_NAME, record.key, record.value, headers)
        except TooLarge:
            # Even the dead letter is refused: keep the why, the where and a fingerprint of the
            # value, so the record is still accounted for and can be fetched from its source.
            value = record.value or b""
            headers += [("dlq.value.dropped", b"too large for the deadletter topic"),
                        ("dlq.value.size", str(len(value)).encode()),
                        ("dlq.value.sha256", hashlib.sha256(value).hexdigest().encode())]
            return await self.sink.send(DEADLETTER_NAME, record.key, None, headers)
