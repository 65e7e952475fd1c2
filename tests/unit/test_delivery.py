"""One record through one agent (bus.delivery), driven by the in-memory bus.

The agents here are small and hand-made, so each test shows one rule of the runtime: ids
derived from the input, correlation and causation headers, trace context, retries of
transient errors, and dead letters that keep the original record.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from counterpoint.bus.agent import Agent, AgentDeclarationError, Emit, Incoming
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.delivery import Delivery, RetryPolicy
from counterpoint.bus.errors import TransientError
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.envelope import Envelope, derive_event_id, scoped_id
from counterpoint.schemas.events import Finding, Generation, Ticket, Usage
from counterpoint.topics.registry import (
    DEADLETTER_NAME,
    INTAKE_TICKETS,
    INVESTIGATION_FINDINGS,
    SYNTHESIS_RESULTS,
    TRIAGE_DECISIONS,
)

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
INPUT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INPUT_TRACEPARENT = f"00-{INPUT_TRACE_ID}-00f067aa0ba902b7-01".encode()


@pytest.fixture(autouse=True, scope="module")
def _sdk_tracer_provider() -> Iterator[None]:
    """A recording tracer provider, so the bus has real spans whose context it propagates."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    yield


# --- hand-made agents -----------------------------------------------------------------------


def _finding_for(ticket: Ticket, n: int) -> Finding:
    return Finding(
        task_id=f"{ticket.id}-task-{n}", request_id=ticket.id, skill="billing", focus="charges",
        agent="t", summary=ticket.body[:40], facts=[],
        generation=Generation(provider="offline", model="m", offline=True),
        usage=Usage(calls=1),
    )


def echo_agent() -> Agent:
    """Two findings per ticket, distinguished by tag."""
    agent = Agent("t", emits=[INVESTIGATION_FINDINGS])

    @agent.handles(INTAKE_TICKETS)
    async def on_ticket(event: Incoming[Ticket]) -> list[Emit]:
        return [Emit(INVESTIGATION_FINDINGS, _finding_for(event.data, n), key=event.request_id,
                     tag=f"f{n}") for n in (1, 2)]

    return agent


def failing_agent(fail_on: str) -> tuple[Agent, list[str]]:
    """Raises a plain exception for the ticket with id `fail_on`; records what it handled."""
    agent = Agent("t", emits=[INVESTIGATION_FINDINGS])
    seen: list[str] = []

    @agent.handles(INTAKE_TICKETS)
    async def on_ticket(event: Incoming[Ticket]) -> list[Emit]:
        seen.append(event.data.id)
        if event.data.id == fail_on:
            raise ValueError(f"cannot handle {event.data.id}: body too odd")
        return [Emit(INVESTIGATION_FINDINGS, _finding_for(event.data, 1), key=event.data.id)]

    return agent, seen


def flaky_agent(failures: int) -> tuple[Agent, list[int]]:
    """Raises TransientError for the first `failures` calls, then succeeds."""
    agent = Agent("t", emits=[INVESTIGATION_FINDINGS])
    calls: list[int] = []

    @agent.handles(INTAKE_TICKETS)
    async def on_ticket(event: Incoming[Ticket]) -> list[Emit]:
        calls.append(len(calls) + 1)
        if len(calls) <= failures:
            raise TransientError(f"model overloaded (call {len(calls)})")
        return [Emit(INVESTIGATION_FINDINGS, _finding_for(event.data, 1), key=event.data.id)]

    return agent, calls


def undeclared_agent() -> Agent:
    """Emits to a topic it does not declare, chosen at run time: the build-time check cannot
    see it (bus/checks.py, tested in test_checks.py), the runtime check must."""
    agent = Agent("t", emits=[INVESTIGATION_FINDINGS])
    targets = {"result": SYNTHESIS_RESULTS}

    @agent.handles(INTAKE_TICKETS)
    async def on_ticket(event: Incoming[Ticket]) -> list[Emit]:
        return [Emit(targets["result"], _finding_for(event.data, 1), key=event.data.id)]

    return agent


async def wrong_type(event: Incoming[Finding]) -> list[Emit]:
    return []


async def ticket_handler(event: Incoming[Ticket]) -> list[Emit]:
    return []


async def other_ticket_handler(event: Incoming[Ticket]) -> list[Emit]:
    return []


async def no_incoming(event: Ticket) -> list[Emit]:
    return []


# --- helpers --------------------------------------------------------------------------------


def _ticket_bytes(ticket_id: str, body: str = "My invoice is wrong.") -> bytes:
    return orjson.dumps({"id": ticket_id, "body": body, "customer_id": "C-42"})


def _cloudevent_headers(event_id: str, request_id: str) -> list[tuple[str, bytes]]:
    envelope = Envelope(id=event_id, source="/tests", type=INTAKE_TICKETS.ce_type,
                        time=datetime(2026, 11, 21, tzinfo=UTC), request_id=request_id,
                        subject="T-1")
    return [*envelope.to_headers(), ("traceparent", INPUT_TRACEPARENT)]


def _fast(delivery: Delivery, max_attempts: int = 3) -> None:
    delivery.retry = RetryPolicy(max_attempts=max_attempts, base_delay_s=0.0001,
                                 max_delay_s=0.001)


def _h(record: RawRecord) -> dict[str, bytes]:
    return dict(record.headers)


# --- outputs --------------------------------------------------------------------------------


async def test_outputs_carry_derived_ids_correlation_causation_and_trace() -> None:
    bus = MemoryBus()
    delivery = bus.add(echo_agent())
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-1"), key=b"T-1",
                      headers=_cloudevent_headers("evt-in", "req-1"))

    assert await bus.run_until_idle() == 1

    out = bus.records(INVESTIGATION_FINDINGS.name)
    assert len(out) == 2
    assert delivery.stats.total("handled") == 1
    assert delivery.stats.total("sent") == 2
    by_tag = {}
    for record in out:
        headers = _h(record)
        envelope = Envelope.from_headers(record.headers)
        assert envelope is not None
        assert envelope.request_id == "req-1"
        assert envelope.causation_id == scoped_id("/tests", "evt-in")
        assert envelope.subject == "T-1"
        assert envelope.source == "/counterpoint/t"
        assert envelope.type == INVESTIGATION_FINDINGS.ce_type
        assert record.key == b"req-1"
        match = TRACEPARENT.match(headers["traceparent"].decode())
        assert match is not None, headers["traceparent"]
        # Same trace as the input, new span.
        assert match.group(1) == INPUT_TRACE_ID
        assert match.group(2) != "00f067aa0ba902b7"
        by_tag[orjson.loads(record.value or b"")["task_id"]] = envelope.id
    assert by_tag == {
        "T-1-task-1": derive_event_id(scoped_id("/tests", "evt-in"), "t",
                                      INVESTIGATION_FINDINGS.name, "f1"),
        "T-1-task-2": derive_event_id(scoped_id("/tests", "evt-in"), "t",
                                      INVESTIGATION_FINDINGS.name, "f2"),
    }


async def test_baggage_and_tracestate_travel_on_with_the_trace() -> None:
    # Before, the process span was made current in the ambient context rather than in the one
    # extracted from the record, so the input's baggage was not passed on.
    bus = MemoryBus()
    bus.add(echo_agent())
    headers = [*_cloudevent_headers("evt-bag", "req-bag"), ("tracestate", b"vendor=abc"),
               ("baggage", b"tenant=acme,plan=gold")]
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-9"), key=b"T-9", headers=headers)
    await bus.run_until_idle()

    out = bus.records(INVESTIGATION_FINDINGS.name)
    assert len(out) == 2
    for record in out:
        h = _h(record)
        match = TRACEPARENT.match(h["traceparent"].decode())
        assert match is not None and match.group(1) == INPUT_TRACE_ID
        assert h["tracestate"] == b"vendor=abc"
        assert sorted(h["baggage"].decode().split(",")) == ["plan=gold", "tenant=acme"]
        names = [k for k, _ in record.headers]
        assert len(names) == len(set(names))  # each header once


async def test_raw_input_starts_a_trace_and_a_request() -> None:
    bus = MemoryBus()
    bus.add(echo_agent())
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-2"), key=b"T-2")
    await bus.run_until_idle()

    (ticket_record,) = bus.records(INTAKE_TICKETS.name)
    out = bus.records(INVESTIGATION_FINDINGS.name)
    ids = {_h(r)["ce_requestid"] for r in out}
    causes = {_h(r)["ce_causationid"] for r in out}
    assert len(ids) == 1 and ids == causes  # the raw record's own id starts the request
    raw_id = derive_event_id("raw", INTAKE_TICKETS.name, str(ticket_record.partition),
                             str(ticket_record.offset), str(ticket_record.timestamp_ms))
    assert ids == {raw_id.encode()}
    assert all(TRACEPARENT.match(_h(r)["traceparent"].decode()) for r in out)


async def test_same_record_twice_gives_identical_ids() -> None:
    bus = MemoryBus()
    delivery = bus.add(echo_agent())
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-3"), key=b"T-3",
                      headers=_cloudevent_headers("evt-3", "req-3"))
    (record,) = bus.records(INTAKE_TICKETS.name)

    await delivery.handle(record)
    first = [_h(r)["ce_id"] for r in bus.records(INVESTIGATION_FINDINGS.name)]
    await delivery.handle(record)
    both = [_h(r)["ce_id"] for r in bus.records(INVESTIGATION_FINDINGS.name)]

    assert len(first) == 2
    assert len(set(first)) == 2
    assert sorted(both) == sorted(first * 2)


async def test_same_raw_record_twice_gives_identical_ids() -> None:
    bus = MemoryBus()
    delivery = bus.add(echo_agent())
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-4"), key=b"T-4")
    (record,) = bus.records(INTAKE_TICKETS.name)

    await delivery.handle(record)
    await delivery.handle(record)

    out = bus.records(INVESTIGATION_FINDINGS.name)
    assert len(out) == 4
    assert len({_h(r)["ce_id"] for r in out}) == 2
    assert len({_h(r)["ce_requestid"] for r in out}) == 1


# --- dead letters ---------------------------------------------------------------------------


async def test_handler_error_goes_to_deadletter_untouched_and_next_record_is_handled() -> None:
    agent, seen = failing_agent("T-bad")
    bus = MemoryBus()
    delivery = bus.add(agent)
    bad_value = _ticket_bytes("T-bad", body="weird")
    bad_headers = [("x-origin", b"crm"), ("traceparent", INPUT_TRACEPARENT)]
    await bus.publish(INTAKE_TICKETS.name, bad_value, key=b"same-key", headers=bad_headers)
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-good"), key=b"same-key")

    assert await bus.run_until_idle() == 2

    assert seen == ["T-bad", "T-good"]
    assert delivery.stats.total("deadlettered") == 1
    assert delivery.stats.total("handled") == 1
    good = bus.records(INVESTIGATION_FINDINGS.name)
    assert [orjson.loads(r.value or b"")["request_id"] for r in good] == ["T-good"]

    (source,) = [r for r in bus.records(INTAKE_TICKETS.name) if r.value == bad_value]
    (dead,) = bus.records(DEADLETTER_NAME)
    assert dead.value == bad_value
    assert dead.key == b"same-key"
    assert dead.headers[:2] == (("x-origin", b"crm"), ("traceparent", INPUT_TRACEPARENT))
    h = _h(dead)
    assert h["dlq.reason"] == b"handler-error"
    assert h["dlq.error.class"] == b"ValueError"
    assert h["dlq.error.message"] == b"cannot handle T-bad: body too odd"
    assert h["dlq.source.topic"] == b"intake.tickets"
    assert h["dlq.source.partition"] == str(source.partition).encode()
    assert h["dlq.source.offset"] == str(source.offset).encode()
    assert h["dlq.agent"] == b"t"
    assert h["dlq.group"] == b"counterpoint.t"
    assert h["dlq.attempts"] == b"1"
    datetime.fromisoformat(h["dlq.first_failure"].decode())
    datetime.fromisoformat(h["dlq.last_failure"].decode())

    letter = DeadLetter.from_record(dead)
    assert (letter.reason, letter.error_class, letter.agent, letter.attempts) == (
        "handler-error", "ValueError", "t", 1)
    assert (letter.source_topic, letter.source_offset) == ("intake.tickets", source.offset)


async def test_undecodable_record_goes_to_deadletter() -> None:
    agent, seen = failing_agent("never")
    bus = MemoryBus()
    delivery = bus.add(agent)
    await bus.publish(INTAKE_TICKETS.name, b'{"id": "T-9"}', key=b"T-9")
    await bus.publish(INTAKE_TICKETS.name, b"not json", key=b"T-9")
    await bus.run_until_idle()

    assert seen == []
    dead = bus.records(DEADLETTER_NAME)
    assert [r.value for r in dead] == [b'{"id": "T-9"}', b"not json"]
    reasons = [DeadLetter.from_record(r) for r in dead]
    assert [d.reason for d in reasons] == ["schema-violation", "undecodable"]
    assert "body" in reasons[0].message
    assert [d.error_class for d in reasons] == ["SchemaError", "DecodeError"]
    assert delivery.stats.total("deadlettered") == 2


async def test_transient_error_is_retried_then_handled() -> None:
    agent, calls = flaky_agent(failures=2)
    bus = MemoryBus()
    delivery = bus.add(agent)
    _fast(delivery)
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-5"), key=b"T-5")

    await bus.run_until_idle()

    assert calls == [1, 2, 3]
    assert delivery.stats.total("retried") == 2
    assert delivery.stats.total("handled") == 1
    assert delivery.stats.total("deadlettered") == 0
    assert bus.records(DEADLETTER_NAME) == []
    assert len(bus.records(INVESTIGATION_FINDINGS.name)) == 1


@pytest.mark.parametrize("max_attempts", [3, 5])
async def test_transient_error_every_time_is_deadlettered_after_max_attempts(
        max_attempts: int) -> None:
    agent, calls = flaky_agent(failures=1_000)
    bus = MemoryBus()
    delivery = bus.add(agent)
    _fast(delivery, max_attempts=max_attempts)
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-6"), key=b"T-6")

    await bus.run_until_idle()

    assert len(calls) == max_attempts
    assert delivery.stats.total("retried") == max_attempts - 1
    assert delivery.stats.total("handled") == 0
    (dead,) = bus.records(DEADLETTER_NAME)
    h = _h(dead)
    assert h["dlq.reason"] == b"transient"
    assert h["dlq.error.class"] == b"TransientError"
    assert h["dlq.attempts"] == str(max_attempts).encode()
    assert h["dlq.error.message"] == f"model overloaded (call {max_attempts})".encode()
    assert bus.records(INVESTIGATION_FINDINGS.name) == []


async def test_emit_to_undeclared_topic_is_deadlettered() -> None:
    bus = MemoryBus()
    delivery = bus.add(undeclared_agent())
    await bus.publish(INTAKE_TICKETS.name, _ticket_bytes("T-7"), key=b"T-7")

    await bus.run_until_idle()

    assert bus.records(SYNTHESIS_RESULTS.name) == []
    (dead,) = bus.records(DEADLETTER_NAME)
    h = _h(dead)
    assert h["dlq.reason"] == b"undeclared-emit"
    assert h["dlq.error.class"] == b"UndeclaredEmit"
    assert SYNTHESIS_RESULTS.name.encode() in h["dlq.error.message"]
    assert h["dlq.attempts"] == b"1"
    assert delivery.stats.total("sent") == 0


async def test_timer_emit_to_undeclared_topic_raises() -> None:
    from counterpoint.bus.agent import Cause
    from counterpoint.bus.errors import UndeclaredEmit

    bus = MemoryBus()
    delivery = bus.add(echo_agent())
    ticket = Ticket(id="T-8", body="x")
    with pytest.raises(UndeclaredEmit):
        await delivery.emit([Emit(TRIAGE_DECISIONS, _finding_for(ticket, 1), key="k")],
                            Cause("evt", "req", None))
    assert bus.records(TRIAGE_DECISIONS.name) == []


# --- declaration ----------------------------------------------------------------------------


def test_handler_annotation_must_match_topic_type() -> None:
    agent = Agent("t", emits=[])
    with pytest.raises(AgentDeclarationError) as info:
        agent.handles(INTAKE_TICKETS)(wrong_type)
    assert "Finding" in str(info.value)
    assert "Ticket" in str(info.value)
    assert agent.handlers == {}


def test_handler_must_take_incoming() -> None:
    agent = Agent("t", emits=[])
    with pytest.raises(AgentDeclarationError, match="Incoming"):
        agent.handles(INTAKE_TICKETS)(no_incoming)


def test_two_handlers_for_one_topic_are_rejected() -> None:
    agent = Agent("t", emits=[])
    agent.handles(INTAKE_TICKETS)(ticket_handler)
    with pytest.raises(AgentDeclarationError, match="two handlers"):
        agent.handles(INTAKE_TICKETS)(other_ticket_handler)
    assert agent.handlers[INTAKE_TICKETS.name][1] is ticket_handler
