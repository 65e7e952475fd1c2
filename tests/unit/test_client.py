"""The SDK without a broker: input errors before any connection, and result deduplication."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from counterpoint.bus.decode import RawRecord
from counterpoint.client import Counterpoint, InputError, RequestTimeout, ResultFilter
from counterpoint.schemas.envelope import Envelope
from counterpoint.schemas.events import SimpleAlert, Ticket
from counterpoint.topics.registry import SYNTHESIS_RESULTS


def _closed_port() -> str:
    """A bootstrap address nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.mark.parametrize(("call", "field"), [
    (lambda cp: cp.publish_ticket({"id": "T-1"}), "body"),
    (lambda cp: cp.publish_ticket({"id": "", "body": "x"}), "id"),
    (lambda cp: cp.publish_alert({"id": "A-1", "service": "api"}), "summary"),
    (lambda cp: cp.publish_alert({"version": "4", "status": "firing", "groupKey": "g",
                                  "alerts": []}), "alerts"),
    (lambda cp: cp.publish({"id": "T-1", "body": 3}, kind="ticket"), "body"),
    (lambda cp: cp.request({"id": "T-1"}, kind="ticket", timeout=1), "body"),
    # Built unchecked: still validated before sending.
    (lambda cp: cp.publish(Ticket.model_construct(id="T-1")), "body"),
])
async def test_invalid_input_names_the_field_before_any_broker_contact(
        call: Any, field: str) -> None:
    started = time.monotonic()
    async with Counterpoint(_closed_port()) as cp:
        with pytest.raises(InputError, match=field):
            await call(cp)
        assert cp._producer is None and cp._reader is None  # nothing was opened
    assert time.monotonic() - started < 2


async def test_non_json_values_are_input_errors() -> None:
    async with Counterpoint(_closed_port()) as cp:
        with pytest.raises(InputError, match="not JSON-serialisable"):
            await cp.publish_ticket({"id": "T-1", "body": "x", "extra": object()})


async def test_publish_needs_a_kind_for_a_mapping_and_a_consistent_one_for_a_model() -> None:
    async with Counterpoint(_closed_port()) as cp:
        with pytest.raises(TypeError, match="kind='ticket'"):
            await cp.publish({"id": "T-1", "body": "x"})
        with pytest.raises(TypeError, match="not a ticket"):
            await cp.publish_ticket(SimpleAlert(id="A", service="api", summary="down"))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="cannot publish a str"):
            await cp.publish("hello")  # type: ignore[arg-type]


def test_bootstrap_defaults_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("COUNTERPOINT_BROKER_PORT", raising=False)
    assert Counterpoint().config.bootstrap_servers == "127.0.0.1:9092"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert Counterpoint().config.bootstrap_servers == "kafka:9092"
    assert Counterpoint("other:1").config.bootstrap_servers == "other:1"


def test_timeout_error_names_the_request() -> None:
    error = RequestTimeout("req-123", 0.5)
    assert isinstance(error, TimeoutError) and "req-123" in str(error)


# --- deduplication ---------------------------------------------------------------------------

def _result(request_id: str, text: str = "hello") -> bytes:
    return orjson.dumps({
        "request_id": request_id, "source_id": "T-1", "kind": "reply", "title": "t",
        "text": text, "priority": "normal", "status": "complete", "findings": [],
        "generation": {"provider": "offline", "model": "none", "offline": True},
        "usage": {}, "completed_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat()})


def _record(event_id: str, request_id: str, offset: int, value: bytes | None = None,
            headers: bool = True) -> RawRecord:
    envelope = Envelope(id=event_id, source="/counterpoint/synthesis",
                        type=SYNTHESIS_RESULTS.ce_type, time=datetime.now(UTC),
                        request_id=request_id)
    return RawRecord(topic=SYNTHESIS_RESULTS.name, partition=0, offset=offset, key=None,
                     value=_result(request_id) if value is None else value,
                     headers=tuple(envelope.to_headers()) if headers else (), timestamp_ms=0)


def test_a_result_published_twice_is_yielded_once() -> None:
    wanted = ResultFilter()
    records = [_record("e1", "r1", 0), _record("e2", "r2", 1), _record("e1", "r1", 2)]
    accepted = [a for r in records if (a := wanted.accept(r)) is not None]
    assert [rid for rid, _ in accepted] == ["r1", "r2"]
    assert accepted[0][1].request_id == "r1"


def test_only_wanted_requests_and_real_results_pass() -> None:
    wanted = ResultFilter({"r2"})
    assert wanted.accept(_record("e1", "r1", 0)) is None
    assert wanted.accept(_record("e3", "r2", 1, headers=False)) is None  # no envelope
    assert wanted.accept(_record("e4", "r2", 2, value=b"{not json")) is None
    accepted = wanted.accept(_record("e2", "r2", 3))
    assert accepted is not None and accepted[0] == "r2"


def test_the_memory_of_seen_results_is_bounded() -> None:
    wanted = ResultFilter(limit=2)
    for i in range(3):
        assert wanted.accept(_record(f"e{i}", "r", i)) is not None
    assert wanted.accept(_record("e2", "r", 3)) is None  # still remembered
    assert wanted.accept(_record("e0", "r", 4)) is not None  # forgotten: oldest went first
