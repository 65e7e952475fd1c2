"""From a Kafka record to an envelope and a validated event, or a reason it cannot be one.

Three shapes are accepted:
- binary-mode CloudEvents (ce_ headers, data as the value): every internal event;
- structured-mode CloudEvents (a JSON value with `specversion` and `data`): intake topics only;
- raw JSON with no envelope at all: intake topics only, so any Kafka client can publish.
A raw record gets an id derived from its topic, partition, offset and timestamp, so a
redelivered record becomes the same request, never a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from pydantic import ValidationError

from counterpoint.bus.errors import DecodeError, SchemaError, UnknownEventType
from counterpoint.schemas.envelope import Envelope, EnvelopeError, derive_event_id, now
from counterpoint.topics.registry import Topic

MAX_ERRORS_SHOWN: Final = 5


@dataclass(frozen=True)
class InputLimits:
    """What a record may be before it is refused (dead-lettered) without being parsed further."""

    max_bytes: int = 1_048_576
    max_depth: int = 32


@dataclass(frozen=True)
class RawRecord:
    """A broker-neutral record; the Kafka and in-memory buses both produce these."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def decode(topic: Topic[Any], record: RawRecord,
           limits: InputLimits = InputLimits()) -> tuple[Envelope, Any]:  # noqa: B008
    if record.value is None:
        raise DecodeError("record has no value (tombstone)")
    try:
        envelope = Envelope.from_headers(record.headers)
    except EnvelopeError as exc:
        raise DecodeError(str(exc)) from exc
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"value is not valid JSON: {exc}") from exc

    if envelope is None:
        if not topic.raw_intake:
            raise DecodeError(
                f"{topic.name} carries CloudEvents in binary mode; record has no ce_specversion"
            )
        envelope, body = _structured(body, record) or (_raw_envelope(topic, record), body)
    elif not topic.raw_intake and envelope.type != topic.ce_type:
        # Intake topics take any outside ce_type: the topic, not the type, gives the meaning.
        raise UnknownEventType(
            f"ce_type {envelope.type!r} is not carried by {topic.name} (expects {topic.ce_type!r})"
        )
    try:
        return envelope, topic.adapter.validate_python(body)
    except ValidationError as exc:
        raise SchemaError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    """`field.path: problem` for each error: what a person needs to fix the input."""
    parts = []
    for err in exc.errors()[:MAX_ERRORS_SHOWN]:
        loc = ".".join(str(p) for p in err["loc"]) or "(value)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - MAX_ERRORS_SHOWN
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def _raw_envelope(topic: Topic[Any], record: RawRecord) -> Envelope:
    event_id = derive_event_id(
        "raw", record.topic, str(record.partition), str(record.offset), str(record.timestamp_ms)
    )
    return Envelope(
        id=event_id,
        source=f"kafka://{record.topic}",
        type=topic.ce_type,
        time=_record_time(record.timestamp_ms),
        request_id=event_id,
    )


def _structured(body: Any, record: RawRecord) -> tuple[Envelope, Any] | None:
    if not (isinstance(body, dict) and "specversion" in body and "data" in body):
        return None
    headers: Sequence[tuple[str, bytes]] = [
        (f"ce_{k}", str(v).encode()) for k, v in body.items() if k != "data" and v is not None
    ]
    try:
        envelope = Envelope.from_headers(headers)
    except EnvelopeError as exc:
        raise DecodeError(f"structured CloudEvent: {exc}") from exc
    assert envelope is not None  # specversion is present
    return envelope, body["data"]


def _record_time(timestamp_ms: int) -> datetime:
    if timestamp_ms <= 0:
        return now()
    moment: datetime = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment
