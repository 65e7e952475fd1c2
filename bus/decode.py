"""From a Kafka record to an envelope and a validated event, or a reason it cannot be one.

Three shapes are accepted:
- binary-mode CloudEvents (ce_ headers, data as the value): every internal event;
- structured-mode CloudEvents (a JSON value with `specversion` and `data`): intake topics only;
- raw JSON with no envelope at all: intake topics only, so any Kafka client can publish.
A raw record gets an id derived from its topic, partition, offset and timestamp, so a
redelivered record becomes the same request, never a second one. A CloudEvent on an intake
topic comes from outside, where only `source` + `id` is unique: its envelope id becomes
`scoped_id(source, id)`, so two senders' `evt-1` never meet in duplicate detection or in the
ids derived from it (its request id comes from the same pair, schemas/envelope.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson
from pydantic import ValidationError

from counterpoint.bus.errors import DecodeError, SchemaError, TooDeep, TooLarge, UnknownEventType
from counterpoint.schemas.envelope import (
    Envelope,
    EnvelopeError,
    derive_event_id,
    now,
    scoped_id,
)
from counterpoint.topics.registry import Topic

MAX_ERRORS_SHOWN: Final = 5
# orjson refuses to parse JSON nested deeper than this, whatever our own limit says.
ORJSON_MAX_DEPTH: Final = 1024


@dataclass(frozen=True)
class InputLimits:
    """What a record may be before it is refused (dead-lettered) without being parsed further.

    `max_bytes` bounds the record's value and is checked before anything is parsed;
    `max_depth` bounds how many arrays/objects the JSON nests inside one another (a scalar is
    depth 0, `{"a": 1}` is 1, `{"a": [1]}` is 2).
    """

    max_bytes: int = 1_048_576
    max_depth: int = 32


class RawRecord(NamedTuple):
    """A broker-neutral record; the Kafka and in-memory buses both produce these.

    A named tuple rather than a frozen dataclass: one is built for every record consumed, and
    a frozen dataclass's __init__ sets each field through object.__setattr__."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


def decode(topic: Topic[Any], record: RawRecord,
           limits: InputLimits = InputLimits()) -> tuple[Envelope, Any]:
    if record.value is None:
        raise DecodeError("record has no value (tombstone)")
    check_size(record.value, limits)
    try:
        envelope = Envelope.from_headers(record.headers)
    except EnvelopeError as exc:
        raise DecodeError(str(exc)) from exc
    body = parse_json(record.value, limits)

    if envelope is None:
        if not topic.raw_intake:
            raise DecodeError(
                f"{topic.name} carries CloudEvents in binary mode; record has no ce_specversion"
            )
        structured = _structured(body, record)
        if structured is None:
            envelope = raw_envelope(topic, record)
        else:
            envelope, body = structured
            envelope = _scoped(envelope)
    elif topic.raw_intake:
        envelope = _scoped(envelope)
    elif envelope.type != topic.ce_type:
        # Intake topics take any outside ce_type: the topic, not the type, gives the meaning.
        raise UnknownEventType(
            f"ce_type {envelope.type!r} is not carried by {topic.name} (expects {topic.ce_type!r})"
        )
    try:
        return envelope, topic.adapter.validate_python(body)
    except ValidationError as exc:
        raise SchemaError(describe_validation_error(exc)) from exc


def check_size(value: bytes, limits: InputLimits) -> None:
    """TooLarge when `value` exceeds the limit: checked before any parsing."""
    if len(value) > limits.max_bytes:
        raise TooLarge(f"record is {len(value):,} bytes; the limit is {limits.max_bytes:,} "
                       "(COUNTERPOINT_MAX_MESSAGE_BYTES)")


def parse_json(value: bytes, limits: InputLimits = InputLimits()) -> Any:
    """The JSON in `value`, or DecodeError / TooDeep saying what is wrong with it."""
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _json_error(value, exc, limits) from exc
    # Each nesting level needs an opening bracket: when the value has no more of them than the
    # limit allows (brackets inside strings only over-count), a walk cannot find anything.
    if value.count(b"[") + value.count(b"{") > limits.max_depth:
        depth = json_depth(body)
        if depth > limits.max_depth:
            raise TooDeep(f"JSON nests {depth} levels deep; the limit is {limits.max_depth} "
                          "(COUNTERPOINT_MAX_JSON_DEPTH)")
    return body


def json_depth(body: Any) -> int:
    """How many arrays/objects nest inside one another in parsed JSON; iterative, one pass."""
    depth = 0
    level = [body] if isinstance(body, dict | list) else []
    while level:
        depth += 1
        below: list[Any] = []
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, dict | list):
                    below.append(child)
        level = below
    return depth


def _json_error(value: bytes, exc: orjson.JSONDecodeError,
                limits: InputLimits) -> DecodeError | TooDeep:
    message = str(exc)
    if "depth limit exceeded" in message:
        return TooDeep(f"JSON nests more than {ORJSON_MAX_DEPTH} levels deep; the limit is "
                       f"{limits.max_depth} (COUNTERPOINT_MAX_JSON_DEPTH)")
    if "not valid UTF-8" in message:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as bad:
            shown = value[bad.start:bad.start + 4].hex(" ")
            return DecodeError(f"value is not valid UTF-8: {bad.reason} at byte {bad.start:,} "
                               f"(bytes {shown}); JSON must be UTF-8 encoded")
        return DecodeError(f"value is not valid UTF-8: {message}")
    return DecodeError(f"value is not valid JSON: {message}")


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


def _scoped(envelope: Envelope) -> Envelope:
    return envelope.model_copy(update={"id": scoped_id(envelope.source, envelope.id)})


def raw_envelope(topic: Topic[Any], record: RawRecord) -> Envelope:
    """The envelope a record with none gets: its id (the request id) derives from where it
    sits in the log, so a redelivery is the same request."""
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
