"""The CloudEvents 1.0 envelope, carried in Kafka binary mode.

Binary mode puts the context attributes in `ce_`-prefixed headers and the data alone in the
record value, so a consumer that knows nothing of CloudEvents still reads plain JSON, and a
Kafka client that publishes raw JSON to an intake topic needs no envelope at all.

Headers written on every internal event:

    ce_specversion  "1.0"
    ce_id           event id (deterministic for derived events: see `derive_event_id`)
    ce_source       "/counterpoint/<agent>" or the publisher's source
    ce_type         e.g. "counterpoint.triage.decision"
    ce_time         RFC 3339 time the event was created
    ce_subject      the business id the request is about (ticket or alert id), when known
    ce_requestid    correlation: the same for every event of one request (extension)
    ce_causationid  the id of the event this one was produced from (extension)
    ce_schemaversion  version of the data schema (extension)
    content-type    "application/json"

Trace context travels beside them in the W3C `traceparent`, `tracestate` and `baggage` headers.

CloudEvents makes `source` + `id` an event's identity, not `id` alone: two senders may both
send `evt-1`. An event from outside therefore gets its id inside Counterpoint, and its request
id, from both (`scoped_id`), so two senders' `evt-1` are two requests with two results.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from time import time as _clock
from typing import Final

import orjson
from pydantic import BaseModel, ConfigDict

from counterpoint.schemas.events import SCHEMA_VERSION

SPECVERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/json"
# A fixed namespace so derived ids are the same in every process and every run.
ID_NAMESPACE: Final = uuid.UUID("5f0c2a1e-9a43-4f3c-9a57-0c0a3e1d7b21")
_NAMESPACE_BYTES: Final = ID_NAMESPACE.bytes

Headers = Sequence[tuple[str, bytes]]


# Every header our own events carry: a record with no others needs no walk over its headers.
_OURS: Final = frozenset({f"ce_{name}" for name in (
    "specversion", "id", "source", "type", "time", "requestid", "causationid", "subject",
    "schemaversion")} | {"content-type", "traceparent", "tracestate", "baggage"})


class EnvelopeError(ValueError):
    """Headers that claim to be a CloudEvent but are not a valid one."""


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    source: str
    type: str
    time: datetime
    request_id: str
    causation_id: str | None = None
    subject: str | None = None
    schema_version: str = SCHEMA_VERSION
    specversion: str = SPECVERSION

    def to_headers(self) -> list[tuple[str, bytes]]:
        return binary_headers(self.id, self.source, self.type, self.time, self.request_id,
                              causation_id=self.causation_id, subject=self.subject,
                              schema_version=self.schema_version,
                              specversion=self.specversion)

    @classmethod
    def from_headers(cls, headers: Headers) -> Envelope | None:
        """The envelope in `headers`, or None when the record carries no CloudEvent."""
        # Runs for every record consumed: the headers go into a dict in C (the last of a
        # repeated name wins), the attributes read are looked up by name, and only a record
        # with ce_ headers other than ours has them walked (each must still be UTF-8).
        raw = dict(headers)
        if "ce_specversion" not in raw:
            return None
        get = raw.get
        try:
            specversion = raw["ce_specversion"].decode("utf-8")
            id_ = None if (v := get("ce_id")) is None else v.decode("utf-8")
            source = None if (v := get("ce_source")) is None else v.decode("utf-8")
            type_ = None if (v := get("ce_type")) is None else v.decode("utf-8")
            time_text = None if (v := get("ce_time")) is None else v.decode("utf-8")
            request_id = None if (v := get("ce_requestid")) is None else v.decode("utf-8")
            causation_id = None if (v := get("ce_causationid")) is None else v.decode("utf-8")
            subject = None if (v := get("ce_subject")) is None else v.decode("utf-8")
            schema = None if (v := get("ce_schemaversion")) is None else v.decode("utf-8")
            if not raw.keys() <= _OURS:
                for k, v in raw.items():
                    if k.startswith("ce_"):
                        v.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"a ce_ header is not UTF-8: {exc}") from exc
        if not (id_ and source and type_):
            names = ", ".join("ce_" + m for m, value in (("id", id_), ("source", source),
                                                         ("type", type_)) if not value)
            raise EnvelopeError(f"CloudEvent headers missing: {names}")
        if specversion != SPECVERSION:
            raise EnvelopeError(f"ce_specversion {specversion!r} is not supported (1.0 is)")
        try:
            time = datetime.fromisoformat(time_text) if time_text else now()
        except ValueError as exc:
            raise EnvelopeError(f"ce_time is not an RFC 3339 time: {time_text!r}") from exc
        return cls.trusted(
            id_, source, type_, time,
            # An outside CloudEvent without our extension starts its own request.
            request_id or scoped_id(source, id_), causation_id, subject,
            SCHEMA_VERSION if schema is None else schema)

    @classmethod
    def trusted(cls, id: str, source: str, type: str, time: datetime, request_id: str,
                causation_id: str | None = None, subject: str | None = None,
                schema_version: str = SCHEMA_VERSION) -> Envelope:
        """An envelope of values already checked to be what the fields declare (strings, a
        datetime), without pydantic's validation: `from_headers` runs for every record
        consumed, and validating what it has just parsed cost more than the parsing. Equal to
        `Envelope(...)` of the same values (tests/unit/test_envelope.py checks it)."""
        envelope = cls.__new__(cls)
        _set(envelope, "__dict__", {
            "id": id, "source": source, "type": type, "time": time, "request_id": request_id,
            "causation_id": causation_id, "subject": subject, "schema_version": schema_version,
            "specversion": SPECVERSION})
        _set(envelope, "__pydantic_fields_set__", set(_GIVEN))
        _set(envelope, "__pydantic_extra__", None)
        _set(envelope, "__pydantic_private__", None)
        return envelope


_set: Final = object.__setattr__
# What `Envelope(...)` of the same arguments records as set (pydantic's model_fields_set).
_GIVEN: Final = frozenset(Envelope.model_fields) - {"specversion"}


_SPECVERSION_BYTES: Final = SPECVERSION.encode()
_SCHEMA_VERSION_BYTES: Final = SCHEMA_VERSION.encode()
_CONTENT_TYPE_BYTES: Final = CONTENT_TYPE.encode()


def binary_headers(event_id: str, source: str, type_: str, time: datetime | bytes,
                   request_id: str, *,
                   causation_id: str | None = None, subject: str | None = None,
                   schema_version: str = SCHEMA_VERSION,
                   specversion: str = SPECVERSION) -> list[tuple[str, bytes]]:
    """The binary-mode headers of an envelope with these attributes (what `to_headers`
    writes). The bus publishes every event through this, without building an `Envelope`:
    its attributes are the bus's own values, not input to validate. `time` may be given as
    its header value already (`now_text()`)."""
    headers = [
        ("ce_specversion", _SPECVERSION_BYTES if specversion == SPECVERSION
         else specversion.encode()),
        ("ce_id", event_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", type_.encode()),
        ("ce_time", time if isinstance(time, bytes) else time.isoformat().encode()),
        ("ce_requestid", request_id.encode()),
        ("ce_schemaversion", _SCHEMA_VERSION_BYTES if schema_version == SCHEMA_VERSION
         else schema_version.encode()),
        ("content-type", _CONTENT_TYPE_BYTES),
    ]
    if causation_id is not None:
        headers.append(("ce_causationid", causation_id.encode()))
    if subject is not None:
        headers.append(("ce_subject", subject.encode()))
    return headers


def now() -> datetime:
    return datetime.now(UTC)


_second: tuple[int, str] = (0, "")


def now_text() -> bytes:
    """`now()` as RFC 3339 text (UTC, microseconds), what `ce_time` carries: formatted from
    the clock directly, since `datetime.isoformat` costs more than the rest of a header."""
    global _second
    moment = _clock()
    second = int(moment)
    if _second[0] != second:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((moment - second) * 1_000_000):06d}+00:00".encode()


def derive_event_id(parent_id: str, *parts: str) -> str:
    """A deterministic id for an event produced from `parent_id`.

    A redelivered input yields the same output ids, which is what lets consumers drop
    duplicates.
    """
    # uuid.uuid5, without building a UUID object (this runs for every event published): the
    # version nibble is always 5, and the variant's two high bits 10.
    h = hashlib.sha1(_NAMESPACE_BYTES + "/".join((parent_id, *parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def scoped_id(source: str, event_id: str) -> str:
    """The id inside Counterpoint of the event `event_id` from `source`: CloudEvents makes the
    pair unique, so the same id from another source is another event. The pair is encoded as
    JSON so that no (source, id) split of one string meets another."""
    return derive_event_id("cloudevents", orjson.dumps([source, event_id]).decode())


def new_event_id() -> str:
    return str(uuid.uuid4())
