"""All six agents from the catalog on the in-memory bus, with the offline provider.

The bus runs every agent through the same `Delivery` code as the Kafka runtime; these tests
check the choreography (fan-out, fan-in, deadlines, redelivery) and what the two worked
examples produce. The integration tests run the same agents on a real broker.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES, UnknownAgent, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OFFLINE_NOTE, OfflineProvider
from counterpoint.agents.reuse import task_cache_key
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.agent import Agent
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.envelope import Envelope
from counterpoint.schemas.events import Finding, Result, TriageDecision
from counterpoint.topics.registry import (
    DEADLETTER_NAME,
    INTAKE_ALERTS,
    INTAKE_TICKETS,
    INVESTIGATION_FINDINGS,
    SYNTHESIS_RESULTS,
    TASKS,
    TRIAGE_DECISIONS,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
TICKET_RAW = (EXAMPLES / "ticket_dual_intent.json").read_bytes()
ALERT_RAW = (EXAMPLES / "alert_alertmanager.json").read_bytes()
PASSWORD_TICKET = orjson.dumps({"id": "T-2002", "customer_id": "C-42",
                                "body": "I forgot my password and cannot log in"})


# Synthesis publishes what it has at once: the deadline has passed as soon as it is set.
DUE_AT_ONCE = {"synthesis_deadline_s": 1e-6, "replay_grace_s": 0}


@pytest.fixture
def ctx(store: BusinessStore) -> AgentContext:
    return AgentContext(store=store, provider=OfflineProvider())


def _bus(ctx: AgentContext, names: tuple[str, ...] = AGENT_NAMES) -> tuple[MemoryBus,
                                                                           dict[str, Agent]]:
    bus = MemoryBus()
    agents = {name: build(name, ctx) for name in names}
    for agent in agents.values():
        bus.add(agent)
    return bus, agents


def _decisions(bus: MemoryBus) -> list[TriageDecision]:
    return [TRIAGE_DECISIONS.decode(r.value or b"") for r in bus.records(TRIAGE_DECISIONS.name)]


def _findings(bus: MemoryBus) -> list[Finding]:
    return [INVESTIGATION_FINDINGS.decode(r.value or b"")
            for r in bus.records(INVESTIGATION_FINDINGS.name)]


def _results(bus: MemoryBus) -> list[Result]:
    return [SYNTHESIS_RESULTS.decode(r.value or b"") for r in bus.records(SYNTHESIS_RESULTS.name)]


def _ce_id(record: RawRecord) -> bytes:
    return dict(record.headers)["ce_id"]


async def _replay(bus: MemoryBus, records: list[RawRecord]) -> None:
    """Publish records again, byte for byte (value, key, headers)."""
    for record in records:
        await bus.publish(record.topic, record.value or b"", key=record.key,
                          headers=record.headers)


def test_catalog_names_every_agent_and_rejects_others(ctx: AgentContext) -> None:
    assert set(AGENT_NAMES) == {"triage", "billing", "account", "infrastructure", "knowledge",
                                "synthesis", "approvals", "executor", "memory", "webhooks"}
    assert {name: build(name, ctx).name for name in AGENT_NAMES} == {n: n for n in AGENT_NAMES}
    with pytest.raises(UnknownAgent, match="triage"):
        build("auditor", ctx)


# --- worked example 1: the dual-intent ticket -----------------------------------------------


async def test_dual_intent_ticket_becomes_one_complete_reply(ctx: AgentContext) -> None:
    bus, _ = _bus(ctx)
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")

    await bus.run_until_idle()

    assert bus.records(DEADLETTER_NAME) == []
    (decision,) = _decisions(bus)
    assert decision.subject.source_id == "T-1001"
    assert set(decision.intents) >= {"billing", "account"}
    planned = sorted(inv.skill for inv in decision.investigations)
    assert planned == ["account", "billing", "knowledge"]
    for skill in ("billing", "account", "knowledge"):
        tasks = [TASKS[skill].decode(r.value or b"") for r in bus.records(TASKS[skill].name)]
        assert [t.skill for t in tasks] == [skill]
        assert tasks[0].request_id == decision.request_id
    assert bus.records(TASKS["infrastructure"].name) == []

    (result,) = _results(bus)
    assert result.kind == "reply"
    assert result.status == "complete"
    assert result.missing == []
    assert result.request_id == decision.request_id
    assert result.source_id == "T-1001"
    skills = {f.skill for f in result.findings}
    assert {"billing", "account"} <= skills
    billing_facts = [fact.text for f in result.findings if f.skill == "billing"
                     for fact in f.facts]
    assert any("INV-2291" in text for text in billing_facts)
    assert OFFLINE_NOTE in result.text
    assert result.generation.offline is True
    assert result.generation.provider == "offline"
    assert result.customer is not None
    assert result.customer["tier"] == "enterprise"
    assert result.customer["customer_id"] == "C-42"
    # triage 1 + one per finding + synthesis 1
    assert result.usage.calls == 1 + len(result.findings) + 1 == 5
    assert result.usage.estimated is True
    assert result.usage.input_tokens == sum(u.input_tokens
                                            for u in result.usage_by_step.values())
    assert set(result.usage_by_step) == {"triage", "synthesis",
                                         *(f"{f.skill}:{f.focus}" for f in result.findings)}


async def test_every_event_of_the_request_shares_its_request_id(ctx: AgentContext) -> None:
    bus, _ = _bus(ctx)
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")
    await bus.run_until_idle()

    (decision,) = _decisions(bus)
    topics = [TRIAGE_DECISIONS.name, *(t.name for t in TASKS.values()),
              INVESTIGATION_FINDINGS.name, SYNTHESIS_RESULTS.name]
    records = [r for t in topics for r in bus.records(t)]
    assert len(records) == 1 + 3 + 3 + 1
    envelopes = [Envelope.from_headers(r.headers) for r in records]
    assert {e.request_id for e in envelopes if e} == {decision.request_id}
    assert all(e is not None and e.subject == "T-1001" for e in envelopes)
    # Keys: the join topics by request id, the task topics by their cache key (reuse.py).
    for record in bus.records(INVESTIGATION_FINDINGS.name):
        assert record.key == decision.request_id.encode()
    cache_keys = {task_cache_key(inv.skill, inv.focus, decision.subject).encode()
                  for inv in decision.investigations}
    assert {r.key for t in TASKS.values() for r in bus.records(t.name)} == cache_keys
    assert len(cache_keys) == 3
    # Each finding is caused by its task.
    task_event_ids = {_ce_id(r) for t in TASKS.values() for r in bus.records(t.name)}
    finding_causes = {dict(r.headers)["ce_causationid"]
                      for r in bus.records(INVESTIGATION_FINDINGS.name)}
    assert finding_causes == task_event_ids


# --- worked example 2: the Alertmanager alert -----------------------------------------------


async def test_alertmanager_alert_becomes_a_runbook(ctx: AgentContext) -> None:
    bus, _ = _bus(ctx)
    await bus.publish(INTAKE_ALERTS.name, ALERT_RAW, key=b"c0ffee1234abcd")

    await bus.run_until_idle()

    assert bus.records(DEADLETTER_NAME) == []
    (decision,) = _decisions(bus)
    assert decision.severity == "critical"
    assert decision.priority == "urgent"
    assert decision.subject.service == "checkout-api"
    assert sorted((i.skill, i.focus) for i in decision.investigations) == [
        ("infrastructure", "deploys"), ("infrastructure", "logs"),
        ("infrastructure", "metrics"), ("knowledge", "runbooks")]
    assert len(bus.records(TASKS["infrastructure"].name)) == 3

    (result,) = _results(bus)
    assert result.kind == "runbook"
    assert result.status == "complete"
    assert result.source_id == "c0ffee1234abcd"
    assert result.priority == "urgent"
    infra = sorted(f.focus for f in result.findings if f.skill == "infrastructure")
    assert infra == ["deploys", "logs", "metrics"]
    assert [f.skill for f in result.findings].count("knowledge") == 1
    assert "v2.14.0" in result.text
    assert "Severity: critical" in result.text
    assert OFFLINE_NOTE in result.text
    rollback = [a for a in result.proposed_actions if a.action == "rollback_deploy"]
    assert len(rollback) == 1
    assert rollback[0].risk == "high"
    assert rollback[0].target == "checkout-api"
    assert rollback[0].status == "proposed"
    assert result.customer is None
    assert result.usage.calls == 1 + 4 + 1


async def test_password_only_ticket_goes_to_account_only(ctx: AgentContext) -> None:
    bus, _ = _bus(ctx)
    await bus.publish(INTAKE_TICKETS.name, PASSWORD_TICKET, key=b"T-2002")

    await bus.run_until_idle()

    (decision,) = _decisions(bus)
    assert decision.intents == ["account"]
    assert sorted(i.skill for i in decision.investigations) == ["account", "knowledge"]
    assert bus.records(TASKS["billing"].name) == []
    assert len(bus.records(TASKS["account"].name)) == 1
    (result,) = _results(bus)
    assert result.status == "complete"
    assert sorted(f.skill for f in result.findings) == ["account", "knowledge"]


# --- deadlines and partial results ----------------------------------------------------------


async def test_deadline_publishes_one_partial_result_naming_what_is_missing(
        store: BusinessStore) -> None:
    ctx = AgentContext(store=store, provider=OfflineProvider(), defaults=DUE_AT_ONCE)
    bus, agents = _bus(ctx, ("triage", "billing", "knowledge", "synthesis"))
    synthesis = agents["synthesis"]
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")
    await bus.run_until_idle()
    assert _results(bus) == []  # the account finding never came

    await bus.tick(synthesis)

    (result,) = _results(bus)
    assert result.status == "partial"
    assert result.missing == ["account (login and account status)"]
    assert sorted(f.skill for f in result.findings) == ["billing", "knowledge"]
    assert "We are still checking: account" in result.text
    (decision_record,) = bus.records(TRIAGE_DECISIONS.name)
    (result_record,) = bus.records(SYNTHESIS_RESULTS.name)
    assert dict(result_record.headers)["ce_causationid"] == _ce_id(decision_record)

    await bus.tick(synthesis)
    assert len(_results(bus)) == 1

    # The late account finding arrives: no second result.
    bus.add(build("account", ctx))
    await bus.run_until_idle()
    assert sorted(f.skill for f in _findings(bus)) == ["account", "billing", "knowledge"]
    assert len(_results(bus)) == 1
    await bus.tick(synthesis)
    assert len(_results(bus)) == 1


async def test_synthesis_deadline_setting_of_the_synthesis_agent_applies(
        store: BusinessStore) -> None:
    """`synthesis_deadline_s` is "how long synthesis waits": set on synthesis alone
    (COUNTERPOINT_SYNTHESIS_DEADLINE_S on the synthesis process), it must take effect."""
    default_ctx = AgentContext(store=store, provider=OfflineProvider())
    bus, _ = _bus(default_ctx, ("triage", "billing", "knowledge"))
    synthesis = build("synthesis", AgentContext(store=store, provider=OfflineProvider(),
                                                defaults=DUE_AT_ONCE))
    bus.add(synthesis)
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")
    await bus.run_until_idle()

    await bus.tick(synthesis)

    results = _results(bus)
    assert [r.status for r in results] == ["partial"]
    assert results[0].missing == ["account (login and account status)"]


async def test_no_partial_result_before_the_deadline(ctx: AgentContext) -> None:
    bus, agents = _bus(ctx, ("triage", "billing", "knowledge", "synthesis"))
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")
    await bus.run_until_idle()

    await bus.tick(agents["synthesis"])  # default deadline: 30 s away

    assert _results(bus) == []


# --- ordering and redelivery ----------------------------------------------------------------


async def _first_run(ctx: AgentContext) -> MemoryBus:
    bus, _ = _bus(ctx)
    await bus.publish(INTAKE_TICKETS.name, TICKET_RAW, key=b"T-1001")
    await bus.run_until_idle()
    assert len(bus.records(SYNTHESIS_RESULTS.name)) == 1
    return bus


async def test_findings_before_their_decision_still_join(ctx: AgentContext) -> None:
    first = await _first_run(ctx)
    (original,) = first.records(SYNTHESIS_RESULTS.name)

    bus, _ = _bus(ctx, ("synthesis",))
    await _replay(bus, list(reversed(first.records(INVESTIGATION_FINDINGS.name))))
    await bus.run_until_idle()
    assert bus.records(SYNTHESIS_RESULTS.name) == []  # waiting for the plan

    await _replay(bus, first.records(TRIAGE_DECISIONS.name))
    await bus.run_until_idle()

    (record,) = bus.records(SYNTHESIS_RESULTS.name)
    (result,) = _results(bus)
    assert result.status == "complete"
    assert sorted(f.skill for f in result.findings) == ["account", "billing", "knowledge"]
    # Whichever input completes the join, the result is the same event.
    assert _ce_id(record) == _ce_id(original)


async def test_result_id_is_the_same_on_redelivery_to_a_fresh_synthesis(
        ctx: AgentContext) -> None:
    first = await _first_run(ctx)
    (original,) = first.records(SYNTHESIS_RESULTS.name)
    # In the first run the last finding completed the join.
    last_finding = first.records(INVESTIGATION_FINDINGS.name)[-1]
    assert dict(original.headers)["ce_causationid"] == _ce_id(last_finding)

    bus, _ = _bus(ctx, ("synthesis",))
    await _replay(bus, first.records(TRIAGE_DECISIONS.name))
    await _replay(bus, first.records(INVESTIGATION_FINDINGS.name))
    await bus.run_until_idle()

    (replayed,) = bus.records(SYNTHESIS_RESULTS.name)
    assert _ce_id(replayed) == _ce_id(original)
    assert replayed.key == original.key


async def test_redelivery_to_the_same_synthesis_publishes_nothing_new(
        ctx: AgentContext) -> None:
    bus = await _first_run(ctx)
    (original,) = bus.records(SYNTHESIS_RESULTS.name)

    await _replay(bus, bus.records(TRIAGE_DECISIONS.name))
    await _replay(bus, bus.records(INVESTIGATION_FINDINGS.name))
    await bus.run_until_idle()

    assert bus.records(SYNTHESIS_RESULTS.name) == [original]


async def test_redelivered_finding_is_counted_once(ctx: AgentContext) -> None:
    first = await _first_run(ctx)
    findings = first.records(INVESTIGATION_FINDINGS.name)

    bus, _ = _bus(ctx, ("synthesis",))
    await _replay(bus, first.records(TRIAGE_DECISIONS.name))
    # The same (first) finding three times: the join must still wait for the other two.
    await _replay(bus, [findings[0], findings[0], findings[0]])
    await bus.run_until_idle()
    assert bus.records(SYNTHESIS_RESULTS.name) == []

    await _replay(bus, findings[1:])
    await bus.run_until_idle()
    (result,) = _results(bus)
    assert len(result.findings) == 3
    assert result.usage.calls == 5


async def test_resolved_alert_needs_no_investigation(ctx: AgentContext) -> None:
    """Resolved, with no firing request seen: no plan, no tasks, no model call; a closing
    result once synthesis's grace for a late plan is over (tests/unit/test_resolved_alerts.py
    covers the other orders)."""
    body = orjson.loads(ALERT_RAW)
    body["status"] = "resolved"
    body["alerts"][0]["status"] = "resolved"
    bus, agents = _bus(AgentContext(store=ctx.store, provider=OfflineProvider(),
                                    defaults={"replay_grace_s": 0}))
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(body), key=b"c0ffee1234abcd")

    await bus.run_until_idle()
    assert _decisions(bus) == []
    assert all(bus.records(t.name) == [] for t in TASKS.values())
    await bus.tick(agents["synthesis"])
    await bus.run_until_idle()

    (result,) = _results(bus)
    assert result.kind == "runbook"
    assert result.status == "complete"
    assert result.findings == []
    assert result.resolution is not None and result.resolution.during == "after"
    assert result.usage.calls == 0


async def test_the_same_cloudevent_id_from_two_sources_gets_two_answers(
        ctx: AgentContext) -> None:
    """CloudEvents makes source + id unique. Two senders' `evt-1` are two requests: the second
    must not be dropped as a duplicate of the first, nor share its request and its answer."""
    bus, _ = _bus(ctx)
    tickets = {"/crm": dict(orjson.loads(TICKET_RAW), id="T-CRM"),
               "/helpdesk": dict(orjson.loads(PASSWORD_TICKET), id="T-DESK")}
    for source, ticket in tickets.items():
        event = {"specversion": "1.0", "id": "evt-1", "source": source,
                 "type": "com.example.ticket.created", "data": ticket}
        await bus.publish(INTAKE_TICKETS.name, orjson.dumps(event), key=b"k")
    await bus.run_until_idle()

    by_source = {r.origin: r for r in _results(bus)}
    assert set(by_source) == set(tickets)
    assert by_source["/crm"].request_id != by_source["/helpdesk"].request_id
    assert by_source["/crm"].source_id == "T-CRM"
    assert by_source["/helpdesk"].source_id == "T-DESK"
