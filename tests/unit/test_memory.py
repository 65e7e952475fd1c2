"""Customer context and memory of past outcomes.

The memory agent records each result; synthesis offers the latest outcomes of the same
customer (tickets) or service (alerts) the next time, and tier and tenure shape the reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.outcomes import OutcomeStore, summarize
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.events import FindingRef, Generation, Result, Usage
from counterpoint.topics.registry import (
    DEADLETTER_NAME,
    INTAKE_ALERTS,
    INTAKE_TICKETS,
    SYNTHESIS_RESULTS,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"


@pytest.fixture
def outcomes(tmp_path: Path) -> Iterator[OutcomeStore]:
    opened = OutcomeStore.open(tmp_path / "home" / "memory.db", scrub=str)
    yield opened
    opened.close()


def _result(request_id: str, at: datetime, text: str = "Refunded.") -> Result:
    return Result(request_id=request_id, source_id=f"T-{request_id}", kind="reply",
                  title="Invoice", text=text, priority="normal", status="complete",
                  findings=[FindingRef(task_id="t", skill="billing", focus="charges",
                                       agent="billing", summary="Charged twice.", facts=[])],
                  generation=Generation(provider="offline", model="m", offline=True),
                  usage=Usage(), completed_at=at)


def _results(bus: MemoryBus) -> list[Result]:
    """In the order they were completed (the bus lists them by partition)."""
    return sorted((SYNTHESIS_RESULTS.decode(r.value or b"")
                   for r in bus.records(SYNTHESIS_RESULTS.name)), key=lambda r: r.completed_at)


def _pipeline(store: BusinessStore, outcomes: OutcomeStore) -> MemoryBus:
    ctx = AgentContext(store=store, provider=OfflineProvider(), outcomes=outcomes)
    bus = MemoryBus()
    for name in AGENT_NAMES:
        bus.add(build(name, ctx))
    return bus


# --- the store ------------------------------------------------------------------------------


def test_recall_returns_the_latest_outcomes_of_the_customer_but_never_the_request_itself(
        outcomes: OutcomeStore) -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    for n in range(5):
        outcomes.record(_result(f"r{n}", t0 + timedelta(days=n)), "C-42", None)
    outcomes.record(_result("other", t0), "C-7", None)
    recalled = outcomes.recall(customer_id="C-42", service=None, exclude="r4")
    assert [h.request_id for h in recalled] == ["r3", "r2", "r1"]
    assert recalled[0].summary == "billing: Charged twice."
    assert recalled[0].completed_at == t0 + timedelta(days=3)
    assert outcomes.recall(customer_id=None, service=None, exclude="x") == []


def test_recording_a_result_again_changes_nothing(outcomes: OutcomeStore) -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    outcomes.record(_result("r1", at), "C-42", None)
    outcomes.record(_result("r1", at), "C-42", None)
    assert outcomes.count() == 1


def test_outcomes_survive_a_reopen_and_are_shared_between_connections(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    writer, reader = OutcomeStore.open(path, scrub=str), OutcomeStore.open(path, scrub=str)
    writer.record(_result("r1", datetime(2026, 11, 1, tzinfo=UTC)), None, "checkout-api")
    assert [h.request_id for h in reader.recall(customer_id=None, service="checkout-api",
                                                exclude="x")] == ["r1"]
    writer.close()
    reader.close()
    again = OutcomeStore.open(path, scrub=str)
    assert again.count() == 1
    again.close()


def test_a_summary_without_findings_is_the_start_of_the_text() -> None:
    result = _result("r1", datetime(2026, 11, 1, tzinfo=UTC), text="word " * 200)
    result = result.model_copy(update={"findings": []})
    line = summarize(result)
    assert line.startswith("word word") and len(line) <= 240


# --- through the agents ---------------------------------------------------------------------


async def test_the_second_request_of_a_customer_references_the_first(
        store: BusinessStore, outcomes: OutcomeStore) -> None:
    bus = _pipeline(store, outcomes)
    first = orjson.dumps({"id": "T-1", "customer_id": "C-42",
                          "body": "I was charged twice for my November invoice"})
    await bus.publish(INTAKE_TICKETS.name, first, key=b"T-1")
    await bus.run_until_idle()
    (earlier,) = _results(bus)
    assert earlier.history == []
    assert outcomes.count() == 1  # the memory agent recorded it

    second = orjson.dumps({"id": "T-2", "customer_id": "C-42",
                           "body": "I still cannot log in to my account"})
    await bus.publish(INTAKE_TICKETS.name, second, key=b"T-2")
    await bus.run_until_idle()
    assert bus.records(DEADLETTER_NAME) == []
    later = _results(bus)[-1]
    assert later.source_id == "T-2"
    assert [h.request_id for h in later.history] == [earlier.request_id]
    assert later.history[0].source_id == "T-1"
    assert "INV-2291" in later.history[0].summary  # what the first request found
    day = earlier.completed_at.date().isoformat()
    assert f"Previous request {earlier.request_id} on {day}" in later.text
    assert outcomes.count() == 2


async def test_a_new_alert_for_a_service_references_its_last_incident(
        store: BusinessStore, outcomes: OutcomeStore) -> None:
    bus = _pipeline(store, outcomes)
    alert = orjson.loads((EXAMPLES / "alert_alertmanager.json").read_bytes())
    for fingerprint in ("fp-monday", "fp-tuesday"):
        alert["alerts"][0]["fingerprint"] = fingerprint
        await bus.publish(INTAKE_ALERTS.name, orjson.dumps(alert), key=fingerprint.encode())
        await bus.run_until_idle()
    first, second = _results(bus)
    assert first.service == second.service == "checkout-api"
    assert [h.request_id for h in second.history] == [first.request_id]
    assert f"Previous request {first.request_id}" in second.text


async def test_another_customer_gets_no_one_elses_history(
        store: BusinessStore, outcomes: OutcomeStore) -> None:
    bus = _pipeline(store, outcomes)
    for sid, customer in (("T-1", "C-42"), ("T-2", "C-19")):
        body = orjson.dumps({"id": sid, "customer_id": customer, "body": f"Invoice {sid}?"})
        await bus.publish(INTAKE_TICKETS.name, body, key=sid.encode())
        await bus.run_until_idle()
    assert _results(bus)[-1].history == []


async def test_a_long_standing_enterprise_customer_and_a_new_free_one_get_different_replies(
        store: BusinessStore, outcomes: OutcomeStore) -> None:
    bus = _pipeline(store, outcomes)
    body = "I can't log into my account"
    for sid, customer in (("T-ent", "C-42"), ("T-free", "C-7")):
        await bus.publish(INTAKE_TICKETS.name, orjson.dumps(
            {"id": sid, "customer_id": customer, "body": body}), key=sid.encode())
    await bus.run_until_idle()
    replies = {r.source_id: r for r in _results(bus)}
    enterprise, free = replies["T-ent"], replies["T-free"]
    assert enterprise.customer is not None and free.customer is not None
    assert (enterprise.customer["tier"], enterprise.customer["tenure"]) == ("enterprise",
                                                                           "3 years")
    assert free.customer["tier"] == "free"
    assert enterprise.text.startswith("Dear Dana,")
    assert "Thank you for 3 years with us; your case has priority handling" in enterprise.text
    assert "Welcome aboard" in free.text and "priority handling" not in free.text
    order = ["low", "normal", "high", "urgent"]
    assert order.index(enterprise.priority) > order.index(free.priority)
