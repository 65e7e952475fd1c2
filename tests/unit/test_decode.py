"""From a Kafka record to an envelope and a validated event (bus.decode)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from counterpoint.bus.decode import RawRecord, decode, describe_validation_error
from counterpoint.bus.errors import DecodeError, SchemaError, UnknownEventType
from counterpoint.schemas.envelope import Envelope, scoped_id
from counterpoint.schemas.events import (
    AlertmanagerWebhook,
    Finding,
    SimpleAlert,
    Ticket,
)
from counterpoint.topics.registry import (
    INTAKE_ALERTS,
    INTAKE_TICKETS,
    INVESTIGATION_FINDINGS,
    TRIAGE_DECISIONS,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
TICKET = {"id": "T-1001", "customer_id": "C-42", "subject": "Invoice wrong",
          "body": "My invoice is wrong.", "channel": "email", "crm_priority": "P2"}
TS = 1_795_000_000_123


def _record(value: bytes | None, *, topic: str = "intake.tickets", partition: int = 1,
            offset: int = 7, headers: tuple[tuple[str, bytes], ...] = (),
            timestamp_ms: int = TS) -> RawRecord:
    return RawRecord(topic, partition, offset, b"T-1001", value, headers, timestamp_ms)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


# --- CloudEvents identity: source + id -------------------------------------------------------


def _structured_event(event_id: str, source: str) -> bytes:
    return _json({"specversion": "1.0", "id": event_id, "source": source,
                  "type": "com.example.ticket.created", "data": TICKET})


def _outside_headers(event_id: str, source: str) -> tuple[tuple[str, bytes], ...]:
    return (("ce_specversion", b"1.0"), ("ce_id", event_id.encode()),
            ("ce_source", source.encode()), ("ce_type", b"com.example.ticket.created"))


def test_two_sources_same_event_id_are_two_events_and_two_requests() -> None:
    """CloudEvents makes source + id unique: the same `id` from another source must neither be
    dropped as a duplicate (the envelope id) nor share the first one's request."""
    structured = [decode(INTAKE_TICKETS, _record(_structured_event("evt-1", s)))[0]
                  for s in ("/crm", "/helpdesk", "/crm")]
    binary = [decode(INTAKE_TICKETS,
                     _record(_json(TICKET), headers=_outside_headers("evt-1", s)))[0]
              for s in ("/crm", "/helpdesk", "/crm")]
    for crm, helpdesk, crm_again in (structured, binary):
        assert crm.id != helpdesk.id and crm.request_id != helpdesk.request_id
        assert (crm_again.id, crm_again.request_id) == (crm.id, crm.request_id)
    assert structured[0].id == binary[0].id == scoped_id("/crm", "evt-1")
    # Internal events keep their own ids: test_binary_cloudevent_on_internal_topic_decodes.


# --- raw intake -----------------------------------------------------------------------------


def test_raw_ticket_gets_a_deterministic_envelope() -> None:
    record = _record(_json(TICKET))

    envelope, ticket = decode(INTAKE_TICKETS, record)
    again, _ = decode(INTAKE_TICKETS, _record(_json(TICKET)))

    assert isinstance(ticket, Ticket)
    assert ticket.id == "T-1001"
    assert ticket.body == "My invoice is wrong."
    # Extra fields a business system sends are kept.
    assert ticket.model_extra == {"crm_priority": "P2"}
    assert envelope.id == again.id
    assert envelope.request_id == envelope.id
    assert envelope.type == INTAKE_TICKETS.ce_type
    assert envelope.source == "kafka://intake.tickets"
    assert envelope.causation_id is None
    assert envelope.time == datetime.fromtimestamp(TS / 1000, UTC)


@pytest.mark.parametrize("change", [{"offset": 8}, {"partition": 2}, {"timestamp_ms": TS + 1}])
def test_raw_ticket_at_other_coordinates_is_another_request(change: dict[str, int]) -> None:
    first, _ = decode(INTAKE_TICKETS, _record(_json(TICKET)))
    other, _ = decode(INTAKE_TICKETS, _record(_json(TICKET), **change))  # type: ignore[arg-type]
    assert other.id != first.id
    assert other.request_id == other.id


def test_raw_record_id_does_not_depend_on_the_value() -> None:
    a, _ = decode(INTAKE_TICKETS, _record(_json(TICKET)))
    b, _ = decode(INTAKE_TICKETS, _record(_json({**TICKET, "body": "something else"})))
    assert a.id == b.id


# --- structured and binary CloudEvents ------------------------------------------------------


def test_structured_cloudevent_on_intake_is_unwrapped() -> None:
    event = {
        "specversion": "1.0",
        "id": "crm-evt-55",
        "source": "https://crm.example.com/tickets",
        "type": "com.example.ticket.created",
        "time": "2026-11-21T10:00:00Z",
        "subject": "T-1001",
        "datacontenttype": "application/json",
        "data": TICKET,
    }

    envelope, ticket = decode(INTAKE_TICKETS, _record(_json(event)))

    assert isinstance(ticket, Ticket)
    assert ticket.id == "T-1001"
    assert ticket.customer_id == "C-42"
    # CloudEvents' identity is source + id: both make the id and the request inside.
    assert envelope.id == scoped_id("https://crm.example.com/tickets", "crm-evt-55")
    assert envelope.request_id == envelope.id
    assert envelope.source == "https://crm.example.com/tickets"
    assert envelope.type == "com.example.ticket.created"
    assert envelope.subject == "T-1001"
    assert envelope.time == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def test_structured_cloudevent_missing_id_is_a_decode_error() -> None:
    event = {"specversion": "1.0", "source": "/x", "type": "t", "data": TICKET}
    with pytest.raises(DecodeError, match="ce_id"):
        decode(INTAKE_TICKETS, _record(_json(event)))


def test_structured_cloudevent_data_is_validated() -> None:
    event = {"specversion": "1.0", "id": "e1", "source": "/x", "type": "t",
             "data": {"id": "T-1"}}
    with pytest.raises(SchemaError, match="body"):
        decode(INTAKE_TICKETS, _record(_json(event)))


def _finding() -> dict[str, Any]:
    return {
        "task_id": "task-1", "request_id": "req-1", "skill": "billing",
        "focus": "charges", "agent": "billing", "summary": "charged twice",
        "facts": [{"text": "INV-1 charged twice", "source": "billing.invoices/INV-1"}],
        "generation": {"provider": "offline", "model": "m", "offline": True},
        "usage": {"input_tokens": 1, "output_tokens": 1, "calls": 1, "estimated": True},
    }


def _binary_headers(ce_type: str) -> tuple[tuple[str, bytes], ...]:
    envelope = Envelope(id="evt-1", source="/counterpoint/billing", type=ce_type,
                        time=datetime(2026, 11, 21, tzinfo=UTC), request_id="req-1",
                        causation_id="evt-0")
    return tuple(envelope.to_headers())


def test_binary_cloudevent_on_internal_topic_decodes() -> None:
    record = _record(_json(_finding()), topic=INVESTIGATION_FINDINGS.name,
                     headers=_binary_headers(INVESTIGATION_FINDINGS.ce_type))
    envelope, finding = decode(INVESTIGATION_FINDINGS, record)
    assert isinstance(finding, Finding)
    assert finding.facts[0].text == "INV-1 charged twice"
    assert envelope.id == "evt-1"
    assert envelope.request_id == "req-1"
    assert envelope.causation_id == "evt-0"


def test_binary_cloudevent_with_wrong_type_on_internal_topic() -> None:
    record = _record(_json(_finding()), topic=INVESTIGATION_FINDINGS.name,
                     headers=_binary_headers(TRIAGE_DECISIONS.ce_type))
    with pytest.raises(UnknownEventType) as info:
        decode(INVESTIGATION_FINDINGS, record)
    assert TRIAGE_DECISIONS.ce_type in str(info.value)
    assert info.value.reason == "unknown-event-type"


def test_internal_topic_without_cloudevent_headers_is_undecodable() -> None:
    record = _record(_json(_finding()), topic=INVESTIGATION_FINDINGS.name)
    with pytest.raises(DecodeError, match="ce_specversion"):
        decode(INVESTIGATION_FINDINGS, record)


def test_internal_topic_rejects_structured_mode() -> None:
    event = {"specversion": "1.0", "id": "e1", "source": "/x",
             "type": INVESTIGATION_FINDINGS.ce_type, "data": _finding()}
    record = _record(_json(event), topic=INVESTIGATION_FINDINGS.name)
    with pytest.raises(DecodeError):
        decode(INVESTIGATION_FINDINGS, record)


def test_broken_envelope_headers_are_a_decode_error() -> None:
    headers = (("ce_specversion", b"1.0"), ("ce_source", b"/x"), ("ce_type", b"t"))
    with pytest.raises(DecodeError, match="ce_id"):
        decode(INTAKE_TICKETS, _record(_json(TICKET), headers=headers))


def test_internal_event_with_unknown_field_is_a_schema_error() -> None:
    record = _record(_json({**_finding(), "surprise": 1}), topic=INVESTIGATION_FINDINGS.name,
                     headers=_binary_headers(INVESTIGATION_FINDINGS.ce_type))
    with pytest.raises(SchemaError, match="surprise"):
        decode(INVESTIGATION_FINDINGS, record)


# --- bad bytes ------------------------------------------------------------------------------


def test_not_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid JSON") as info:
        decode(INTAKE_TICKETS, _record(b"id=T-1&body=hello"))
    assert info.value.reason == "undecodable"


def test_non_utf8_value_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode(INTAKE_TICKETS, _record(b'{"id": "T-1", "body": "caf\xe9"}'))


def test_tombstone_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="tombstone"):
        decode(INTAKE_TICKETS, _record(None))


def test_ticket_without_body_names_body() -> None:
    ticket = {k: v for k, v in TICKET.items() if k != "body"}
    with pytest.raises(SchemaError) as info:
        decode(INTAKE_TICKETS, _record(_json(ticket)))
    assert "body" in str(info.value)
    assert "Field required" in str(info.value)
    assert info.value.reason == "schema-violation"


def test_ticket_with_empty_body_names_body() -> None:
    with pytest.raises(SchemaError, match=r"^body: "):
        decode(INTAKE_TICKETS, _record(_json({**TICKET, "body": ""})))


def test_json_array_is_a_schema_error() -> None:
    with pytest.raises(SchemaError):
        decode(INTAKE_TICKETS, _record(b"[1, 2]"))


# --- alerts ---------------------------------------------------------------------------------


def test_alertmanager_example_validates_on_intake_alerts() -> None:
    raw = (EXAMPLES / "alert_alertmanager.json").read_bytes()
    envelope, alert = decode(INTAKE_ALERTS, _record(raw, topic=INTAKE_ALERTS.name))
    assert isinstance(alert, AlertmanagerWebhook)
    assert alert.alerts[0].fingerprint == "c0ffee1234abcd"
    assert alert.alerts[0].labels["service"] == "checkout-api"
    assert alert.alerts[0].startsAt == datetime(2026, 11, 21, 13, 45, tzinfo=UTC)
    assert envelope.type == INTAKE_ALERTS.ce_type


def test_simple_alert_validates_on_intake_alerts() -> None:
    raw = _json({"id": "A-7", "service": "checkout-api", "severity": "critical",
                 "summary": "5xx above 5%", "team": "payments"})
    _, alert = decode(INTAKE_ALERTS, _record(raw, topic=INTAKE_ALERTS.name))
    assert isinstance(alert, SimpleAlert)
    assert alert.id == "A-7"
    assert alert.severity == "critical"
    assert alert.model_extra == {"team": "payments"}


def test_describe_validation_error_lists_field_paths() -> None:
    body = orjson.loads((EXAMPLES / "alert_alertmanager.json").read_bytes())
    del body["alerts"][0]["labels"]
    del body["groupKey"]
    with pytest.raises(ValidationError) as info:
        AlertmanagerWebhook.model_validate(body)
    text = describe_validation_error(info.value)
    parts = text.split("; ")
    assert "groupKey: Field required" in parts
    assert "alerts.0.labels: Field required" in parts
    assert len(parts) == 2


def test_describe_validation_error_caps_the_list() -> None:
    with pytest.raises(ValidationError) as info:
        Finding.model_validate({"a": 1})
    text = describe_validation_error(info.value)
    count = info.value.error_count()
    assert count > 5
    assert text.count(": Field required") == 5
    assert text.endswith(f"... and {count - 5} more")


def test_bad_alertmanager_body_on_topic_names_the_path() -> None:
    body = orjson.loads((EXAMPLES / "alert_alertmanager.json").read_bytes())
    del body["alerts"][0]["labels"]
    with pytest.raises(SchemaError, match=r"alerts\.0\.labels"):
        decode(INTAKE_ALERTS, _record(_json(body), topic=INTAKE_ALERTS.name))
