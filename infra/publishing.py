"""Publishing tickets and alerts from the CLI (and, later, the SDK and the gateway).

Input is validated before anything is sent, and a person gets a message naming each bad
field. What is published is the original JSON, unchanged (extra fields are kept), with a
CloudEvents envelope in the headers and the publisher's trace context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from counterpoint.bus import tracing
from counterpoint.bus.decode import describe_validation_error
from counterpoint.bus.kafka import KafkaConfig, Producer
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.schemas.events import AlertmanagerWebhook, SimpleAlert, Ticket
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


def validate(kind: Kind, raw: bytes, origin: str) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{origin}: not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InputError(f"{origin}: expected a JSON object, got {type(body).__name__}")
    if kind == "alert" and "version" not in body and "alerts" in body:
        raise InputError(f"{origin}: an Alertmanager webhook body needs \"version\": \"4\"")
    try:
        return TOPICS[kind].adapter.validate_python(body)
    except ValidationError as exc:
        detail = describe_validation_error(_narrow(kind, body, exc))
        raise InputError(f"{origin}: invalid {kind}: {detail}") from exc


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
        return event.alerts[0].fingerprint or event.groupKey
    raise TypeError(type(event))


async def publish(config: KafkaConfig, kind: Kind, raw: bytes, origin: str,
                  *, source: str = "/counterpoint/cli") -> Receipt:
    event = validate(kind, raw, origin)
    topic = TOPICS[kind]
    event_id = new_event_id()
    sid = source_id(event)
    envelope = Envelope(id=event_id, source=source, type=topic.ce_type, time=now(),
                        request_id=event_id, subject=sid)
    headers = envelope.to_headers()
    with tracing.send_span(topic.name, request_id=event_id, event_id=event_id):
        tracing.inject(headers)
        async with Producer(config) as producer:
            partition, offset = await producer.send(topic.name, raw, key=sid.encode(),
                                                    headers=headers)
    return Receipt(event_id, sid, topic.name, partition, offset)
