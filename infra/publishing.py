"""Publishing tickets and alerts from the CLI (and, later, the SDK and the gateway).

Input is validated before anything is sent, and a person gets a message naming each bad
field. What is published is the original JSON, unchanged (extra fields are kept), with a
CloudEvents envelope in the headers and the publisher's trace context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import orjson
from pydantic import ValidationError

from counterpoint.bus import tracing
from counterpoint.bus.decode import describe_validation_error
from counterpoint.bus.kafka import KafkaConfig, Producer
from counterpoint.schemas.alert_cap import DEFAULT_MAX_ALERTS, over_alert_cap
from counterpoint.schemas.envelope import Envelope, new_event_id, now, scoped_id
from counterpoint.schemas.events import AlertmanagerWebhook, SimpleAlert, Ticket
from counterpoint.schemas.identity import lead_alert, request_id_for
from counterpoint.topics.registry import INTAKE_ALERTS, INTAKE_TICKETS, Topic

Kind = Literal["ticket", "alert"]
TOPICS: dict[str, Topic[Any]] = {"ticket": INTAKE_TICKETS, "alert": INTAKE_ALERTS}


class InputError(ValueError):
    """Input a person typed or pointed at that cannot be published; the message says why."""


@dataclass(frozen=True)
class Receipt:
    request_id: str
    source_id: str
    topic: str
    partition: int
    offset: int


def validate(kind: Kind, raw: bytes, origin: str, max_alerts: int = DEFAULT_MAX_ALERTS) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{origin}: not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InputError(f"{origin}: expected a JSON object, got {type(body).__name__}")
    if kind == "alert" and "version" not in body and "alerts" in body:
        raise InputError(f"{origin}: an Alertmanager webhook body needs \"version\": \"4\"")
    try:
        event = TOPICS[kind].adapter.validate_python(body)
    except ValidationError as exc:
        detail = describe_validation_error(_narrow(kind, body, exc))
        raise InputError(f"{origin}: invalid {kind}: {detail}") from exc
    if (too_many := over_alert_cap(event, max_alerts)) is not None:
        raise InputError(f"{origin}: alerts: {too_many}")
    return event


def _narrow(kind: Kind, body: dict[str, Any], exc: ValidationError) -> ValidationError:
    """For a union (alerts), report the errors of the shape the input was meant to be."""
    if kind != "alert":
        return exc
    model = AlertmanagerWebhook if "alerts" in body or "groupKey" in body else SimpleAlert
    try:
        model.model_validate(body)
    except ValidationError as narrowed:
        return narrowed
    return exc


def source_id(event: Any) -> str:
    if isinstance(event, Ticket | SimpleAlert):
        return event.id
    if isinstance(event, AlertmanagerWebhook):
        return lead_alert(event).fingerprint or event.groupKey
    raise TypeError(type(event))


class Sender(Protocol):
    """Anything that publishes a record and returns (partition, offset) once acknowledged."""

    async def send(self, topic: str, value: bytes, *, key: bytes | None,
                   headers: Sequence[tuple[str, bytes]]) -> tuple[int, int]: ...


async def send_event(sender: Sender, kind: Kind, raw: bytes, event: Any, *, source: str,
                     event_id: str | None = None, ce_type: str | None = None,
                     time: datetime | None = None) -> Receipt:
    """Publish a validated ticket or alert as a new request: the original JSON as the value,
    a CloudEvents envelope and the publisher's trace context in the headers.

    `event_id` is given when the caller must know the request id before publishing, or when
    it comes from an outside CloudEvent, so a retried delivery is the same request. The
    request id derives from `source` and `event_id` together (`scoped_id`): the same event id
    from another source is another request. An Alertmanager body's request id is derived from
    its alert instead (`request_id_for`), so its resolved notification closes the same request.
    """
    topic = TOPICS[kind]
    event_id = event_id or new_event_id()
    request_id = request_id_for(event, scoped_id(source, event_id))
    sid = source_id(event)
    envelope = Envelope(id=event_id, source=source, type=ce_type or topic.ce_type,
                        time=time or now(), request_id=request_id, subject=sid)
    headers = envelope.to_headers()
    with tracing.send_span(topic.name, request_id=request_id, event_id=event_id):
        tracing.inject(headers)
        partition, offset = await sender.send(topic.name, raw, key=sid.encode(),
                                              headers=headers)
    return Receipt(request_id, sid, topic.name, partition, offset)


async def publish(config: KafkaConfig, kind: Kind, raw: bytes, origin: str,
                  *, source: str = "/counterpoint/cli",
                  max_alerts: int = DEFAULT_MAX_ALERTS) -> Receipt:
    """Validate, then publish over a producer of its own (the CLI's one-shot path)."""
    event = validate(kind, raw, origin, max_alerts)
    async with Producer(config) as producer:
        return await send_event(producer, kind, raw, event, source=source)
