"""The CloudEvents envelope in Kafka binary mode: headers out, headers back in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from counterpoint.schemas.envelope import (
    CONTENT_TYPE,
    ID_NAMESPACE,
    Envelope,
    EnvelopeError,
    derive_event_id,
    scoped_id,
)
from counterpoint.schemas.events import SCHEMA_VERSION

TIME = datetime(2026, 11, 21, 13, 45, 12, 345678, tzinfo=UTC)


def _envelope(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "id": "evt-1",
        "source": "/counterpoint/triage",
        "type": "counterpoint.triage.decision",
        "time": TIME,
        "request_id": "req-9",
        "causation_id": "evt-0",
        "subject": "T-1001",
    }
    fields.update(overrides)
    return Envelope.model_validate(fields)


def _headers(**values: str | bytes | None) -> list[tuple[str, bytes]]:
    """ce_ headers from keyword values; None leaves a header out."""
    base: dict[str, str | bytes | None] = {
        "specversion": "1.0",
        "id": "outside-1",
        "source": "https://crm.example.com",
        "type": "com.example.ticket.created",
        "time": "2026-11-21T13:45:00+00:00",
    }
    base.update(values)
    return [
        ("ce_" + k, v if isinstance(v, bytes) else v.encode())
        for k, v in base.items()
        if v is not None
    ]


def test_round_trip_keeps_every_attribute() -> None:
    original = _envelope()
    headers = original.to_headers()

    back = Envelope.from_headers(headers)

    assert back == original
    assert back is not None
    assert back.causation_id == "evt-0"
    assert back.subject == "T-1001"
    assert back.time == TIME
    as_dict = dict(headers)
    assert as_dict["ce_specversion"] == b"1.0"
    assert as_dict["ce_id"] == b"evt-1"
    assert as_dict["ce_requestid"] == b"req-9"
    assert as_dict["ce_causationid"] == b"evt-0"
    assert as_dict["ce_subject"] == b"T-1001"
    assert as_dict["ce_schemaversion"] == SCHEMA_VERSION.encode()
    assert as_dict["content-type"] == CONTENT_TYPE.encode()


def test_round_trip_without_optional_attributes_and_with_offset_time() -> None:
    tz = timezone(timedelta(hours=-5))
    original = _envelope(causation_id=None, subject=None,
                         time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz))
    headers = original.to_headers()

    names = [k for k, _ in headers]
    assert "ce_causationid" not in names
    assert "ce_subject" not in names
    back = Envelope.from_headers(headers)
    assert back == original
    assert back is not None and back.time.utcoffset() == timedelta(hours=-5)


def test_other_headers_are_ignored_in_round_trip() -> None:
    original = _envelope()
    headers = [("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"),
               *original.to_headers(), ("x-binary", b"\xff\xfe")]
    assert Envelope.from_headers(headers) == original


def test_no_specversion_means_no_cloudevent() -> None:
    assert Envelope.from_headers([]) is None
    assert Envelope.from_headers([("content-type", b"application/json")]) is None
    # Other ce_ headers without ce_specversion still do not make a CloudEvent.
    assert Envelope.from_headers(_headers(specversion=None)) is None


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_missing_required_attribute_is_named(name: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.from_headers(_headers(**{name: None}))
    message = str(info.value)
    assert f"ce_{name}" in message
    others = {"id", "source", "type"} - {name}
    assert not any(f"ce_{o}" in message for o in others)


@pytest.mark.parametrize("name", ["id", "source", "type"])
def test_empty_required_attribute_counts_as_missing(name: str) -> None:
    with pytest.raises(EnvelopeError, match=f"ce_{name}"):
        Envelope.from_headers(_headers(**{name: ""}))


def test_all_missing_attributes_are_listed() -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.from_headers(_headers(id=None, type=None))
    assert "ce_id" in str(info.value)
    assert "ce_type" in str(info.value)
    assert "ce_source" not in str(info.value)


def test_wrong_specversion_is_rejected() -> None:
    with pytest.raises(EnvelopeError, match=r"'0\.3'"):
        Envelope.from_headers(_headers(specversion="0.3"))


def test_bad_time_is_rejected_with_the_value() -> None:
    with pytest.raises(EnvelopeError) as info:
        Envelope.from_headers(_headers(time="yesterday at noon"))
    assert "ce_time" in str(info.value)
    assert "yesterday at noon" in str(info.value)


def test_missing_time_defaults_to_now() -> None:
    before = datetime.now(UTC)
    envelope = Envelope.from_headers(_headers(time=None))
    after = datetime.now(UTC)
    assert envelope is not None
    assert before <= envelope.time <= after


def test_non_utf8_ce_header_is_an_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="UTF-8"):
        Envelope.from_headers(_headers(source=b"\xff\xfe\xfa"))


def test_outside_cloudevent_starts_its_own_request() -> None:
    envelope = Envelope.from_headers(_headers())
    assert envelope is not None
    assert envelope.id == "outside-1"
    # Its request comes from source + id, the pair CloudEvents makes unique.
    assert envelope.request_id == scoped_id("https://crm.example.com", "outside-1")
    assert envelope.causation_id is None
    assert envelope.subject is None
    assert envelope.schema_version == SCHEMA_VERSION
    assert envelope.time == datetime(2026, 11, 21, 13, 45, tzinfo=UTC)


def test_requestid_extension_is_kept() -> None:
    envelope = Envelope.from_headers(_headers(requestid="req-77", causationid="evt-3"))
    assert envelope is not None
    assert envelope.request_id == "req-77"
    assert envelope.causation_id == "evt-3"


def test_derive_event_id_is_deterministic() -> None:
    a = derive_event_id("parent-1", "triage", "triage.decisions", "decision")
    b = derive_event_id("parent-1", "triage", "triage.decisions", "decision")
    assert a == b
    # A UUID string, so it fits wherever an event id goes.
    assert len(a) == 36 and a.count("-") == 4


def test_derive_event_id_differs_for_different_parts() -> None:
    base = derive_event_id("parent-1", "triage", "triage.decisions", "decision")
    variants = {
        derive_event_id("parent-2", "triage", "triage.decisions", "decision"),
        derive_event_id("parent-1", "synthesis", "triage.decisions", "decision"),
        derive_event_id("parent-1", "triage", "synthesis.results", "decision"),
        derive_event_id("parent-1", "triage", "triage.decisions", "task-1"),
        derive_event_id("parent-1", "triage", "triage.decisions"),
        derive_event_id("parent-1"),
    }
    assert base not in variants
    assert len(variants) == 6


@settings(max_examples=300)
@given(parent=st.text(), parts=st.lists(st.text(), max_size=4))
def test_derived_ids_are_uuid5_of_the_joined_parts(parent: str, parts: list[str]) -> None:
    # derive_event_id computes uuid5 by hand (it runs once per published event); ids already
    # on topics must stay what uuid.uuid5 made them.
    expected = uuid.uuid5(ID_NAMESPACE, "/".join((parent, *parts)))
    assert derive_event_id(parent, *parts) == str(expected)


def test_the_same_id_from_two_sources_is_two_requests() -> None:
    a = Envelope.from_headers(_headers(id="evt-1", source="/crm"))
    b = Envelope.from_headers(_headers(id="evt-1", source="/helpdesk"))
    again = Envelope.from_headers(_headers(id="evt-1", source="/crm"))
    assert a is not None and b is not None and again is not None
    assert a.request_id != b.request_id
    assert again.request_id == a.request_id  # the same event again is the same request


def test_scoped_ids_do_not_meet_across_a_slash() -> None:
    assert scoped_id("/a/b", "c") != scoped_id("/a", "b/c")


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1), st.text(min_size=1),
       st.none() | st.text(), st.none() | st.text())
def test_a_trusted_envelope_is_the_validated_one(id_: str, source: str, type_: str,
                                                 request_id: str, causation_id: str | None,
                                                 subject: str | None) -> None:
    validated = Envelope(id=id_, source=source, type=type_, time=TIME, request_id=request_id,
                         causation_id=causation_id, subject=subject,
                         schema_version=SCHEMA_VERSION)
    trusted = Envelope.trusted(id_, source, type_, TIME, request_id, causation_id, subject,
                               SCHEMA_VERSION)
    assert trusted == validated
    assert trusted.model_dump() == validated.model_dump()
    assert trusted.model_fields_set == validated.model_fields_set
    assert hash(trusted) == hash(validated)
    copied = trusted.model_copy(update={"id": "other"})  # what decode does to outside events
    assert copied.id == "other" and trusted.id == id_
    with pytest.raises(ValidationError):  # frozen like any other
        trusted.id = "x"  # type: ignore[misc]


def test_an_envelope_read_from_headers_is_the_validated_one() -> None:
    envelope = _envelope()
    read = Envelope.from_headers(envelope.to_headers())
    assert read == envelope
    assert read is not None and read.model_dump_json() == envelope.model_dump_json()


def test_a_non_utf8_extension_header_is_an_envelope_error_too() -> None:
    with pytest.raises(EnvelopeError, match="UTF-8"):
        Envelope.from_headers(_headers(partnerext=b"\xff\xfe"))
    read = Envelope.from_headers([*_headers(), ("x-binary", b"\xff"), ("ce_partnerext", b"ok")])
    assert read is not None and read.id == "outside-1"


def test_without_specversion_other_ce_headers_are_not_read() -> None:
    assert Envelope.from_headers([("ce_id", b"\xff\xfe"), ("ce_source", b"x")]) is None


def test_the_last_of_a_repeated_header_counts() -> None:
    read = Envelope.from_headers([*_headers(id="first"), ("ce_id", b"second")])
    assert read is not None and read.id == "second"
