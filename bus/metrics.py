"""The bus's metrics: what each agent consumed, sent, retried and dead-lettered, how long its
handlers took, how far behind its partitions are and how many records it has in flight.

Names and attributes follow the OpenTelemetry messaging conventions where they exist
(`messaging.client.consumed.messages`, `messaging.client.sent.messages`,
`messaging.process.duration`); the rest are `counterpoint.*`. Every series carries the agent
(`counterpoint.agent`) besides the conventions' system, topic and group.

Cheap on the hot path: the counts are plain integers a `Delivery` keeps anyway (its
`DeliveryStats`), read by observable counters only when a reader collects (a Prometheus scrape,
an OTLP export); the one per-record instrument call is the handler-duration histogram, whose
attributes are built once per topic. With no meter provider installed (infra/metrics.py
installs one) the API's instruments do nothing and the callbacks never run.

Callbacks run on the collecting thread (an HTTP server's, an exporter's), so they only copy
what the event loop's objects hold (`list(...)` of a dict is one step under the GIL).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

METER_NAME: Final = "counterpoint.bus"
AGENT_ATTR: Final = "counterpoint.agent"
REASON_ATTR: Final = "counterpoint.deadletter.reason"
# The conventions' advice for durations in seconds (the SDK's default buckets are for ms).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                           5.0, 7.5, 10.0, 30.0, 60.0)

Attributes = dict[str, str | int]


@dataclass
class DeliveryStats:
    """What one agent's `Delivery` did, per topic: consumed and handled per source topic,
    sent per destination, dead-lettered per source topic and reason."""

    consumed: dict[str, int] = field(default_factory=dict)
    handled: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    deadlettered: dict[tuple[str, str], int] = field(default_factory=dict)

    def total(self, kind: str) -> int:
        counts: dict[str, int] | dict[tuple[str, str], int] = getattr(self, kind)
        return sum(counts.values())


def bump(counts: dict[str, int], topic: str, n: int = 1) -> None:
    counts[topic] = counts.get(topic, 0) + n


class Watched(Protocol):
    """A consumer the metrics read from (bus/delivery.py's Delivery)."""

    @property
    def stats(self) -> DeliveryStats: ...

    def topic_attributes(self, topic: str | None) -> Attributes:
        """The agent's series attributes, with `topic` as the destination (None: none)."""
        ...


class Consuming(Protocol):
    """A running consume loop (bus/kafka.py's engine): records in flight, lag per partition."""

    @property
    def in_flight(self) -> int: ...

    def lag(self) -> Iterable[tuple[str, int, int]]:
        """(topic, partition, records not yet fetched) for each assigned partition known."""
        ...

    def topic_attributes(self, topic: str | None) -> Attributes: ...


_deliveries: weakref.WeakSet[Watched] = weakref.WeakSet()
_loops: weakref.WeakSet[Consuming] = weakref.WeakSet()


def watch(delivery: Watched) -> None:
    """Report `delivery`'s counts for as long as it lives."""
    _deliveries.add(delivery)


def watch_loop(loop: Consuming) -> None:
    _loops.add(loop)


def _counts(kind: str, operation: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
    def observe(_options: CallbackOptions) -> Iterator[Observation]:
        for delivery in list(_deliveries):
            counts: dict[str, int] = getattr(delivery.stats, kind)
            for topic, n in list(counts.items()):
                attrs = dict(delivery.topic_attributes(topic))
                attrs["messaging.operation.name"] = operation
                yield Observation(n, attrs)
    return observe


def _deadlettered(_options: CallbackOptions) -> Iterator[Observation]:
    for delivery in list(_deliveries):
        for (topic, reason), n in list(delivery.stats.deadlettered.items()):
            attrs = dict(delivery.topic_attributes(topic))
            attrs[REASON_ATTR] = reason
            yield Observation(n, attrs)


def _in_flight(_options: CallbackOptions) -> Iterator[Observation]:
    for loop in list(_loops):
        yield Observation(loop.in_flight, dict(loop.topic_attributes(None)))


def _lag(_options: CallbackOptions) -> Iterator[Observation]:
    for loop in list(_loops):
        for topic, partition, lag in list(loop.lag()):
            attrs = dict(loop.topic_attributes(topic))
            attrs["messaging.destination.partition.id"] = str(partition)
            yield Observation(lag, attrs)


_meter: Final = metrics.get_meter(METER_NAME)

_meter.create_observable_counter(
    "messaging.client.consumed.messages", [_counts("consumed", "receive")], unit="{message}",
    description="Records an agent received, per source topic (every one, also those that "
                "were dead-lettered or skipped as duplicates).")
_meter.create_observable_counter(
    "messaging.client.sent.messages", [_counts("sent", "send")], unit="{message}",
    description="Events an agent published, per destination topic (dead letters not "
                "included).")
_meter.create_observable_counter(
    "counterpoint.messages.handled", [_counts("handled", "process")], unit="{message}",
    description="Records whose handler succeeded, per source topic.")
_meter.create_observable_counter(
    "counterpoint.messages.retried", [_counts("retried", "process")], unit="{retry}",
    description="Handler retries after a retriable failure, per source topic.")
_meter.create_observable_counter(
    "counterpoint.messages.duplicates", [_counts("duplicates", "process")], unit="{message}",
    description="Redelivered records skipped because their event was already handled.")
_meter.create_observable_counter(
    "counterpoint.messages.deadlettered", [_deadlettered], unit="{message}",
    description="Records sent to the deadletter topic, per source topic and reason.")
_meter.create_observable_up_down_counter(
    "counterpoint.messages.in_flight", [_in_flight], unit="{message}",
    description="Records fetched and not yet finished (handled and acknowledged), including "
                "records a join holds open.")
_meter.create_observable_gauge(
    "counterpoint.consumer.lag", [_lag], unit="{message}",
    description="Per assigned partition: the broker's high watermark at the last fetch minus "
                "the next offset this process will fetch (records waiting to be fetched).")

process_duration: Final = _meter.create_histogram(
    "messaging.process.duration", unit="s",
    description="Time a handler took for one record, retries included.",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
