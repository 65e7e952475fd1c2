"""Resolved Alertmanager notifications close the request their firing notification opened.

On the in-memory bus with the real agents: the request id comes from the alert (fingerprint +
startsAt), so firing and resolved meet whatever envelope they arrived with, and synthesis
closes the request whether its investigation is finished, still running, or was never seen.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from counterpoint.agents.catalog import build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.events import AlertmanagerAlert, AlertmanagerWebhook, Result
from counterpoint.schemas.identity import alert_request_id, request_id_for
from counterpoint.topics.registry import (
    DEADLETTER_NAME,
    INTAKE_ALERTS,
    SYNTHESIS_RESULTS,
    TRIAGE_CLOSURES,
    TRIAGE_DECISIONS,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "infra" / "examples" / "alert_alertmanager.json"
FIRING: dict[str, Any] = orjson.loads(EXAMPLE.read_bytes())
INVESTIGATORS = ("infrastructure", "knowledge")


def resolved(body: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["status"] = "resolved"
    for alert in out["alerts"]:
        alert["status"] = "resolved"
        alert["endsAt"] = "2026-11-21T14:05:00Z"
    return out


@pytest.fixture
def ctx(tmp_path: Path) -> AgentContext:
    store = BusinessStore.open(tmp_path / "b.db")
    return AgentContext(store=store, provider=OfflineProvider(), defaults={"replay_grace_s": 0})


def bus_with(ctx: AgentContext, names: tuple[str, ...]) -> MemoryBus:
    bus = MemoryBus()
    for name in names:
        bus.add(build(name, ctx))
    return bus


def results(bus: MemoryBus) -> list[tuple[str, str, Result]]:
    """(envelope request id, event id, result) for each result published."""
    out = []
    for record in bus.records(SYNTHESIS_RESULTS.name):
        headers = dict(record.headers)
        out.append((headers["ce_requestid"].decode(), headers["ce_id"].decode(),
                    SYNTHESIS_RESULTS.decode(record.value or b"")))
    return out


def expected_id(body: dict[str, Any]) -> str:
    return request_id_for(AlertmanagerWebhook.model_validate(body), "unused")


async def test_resolved_after_the_runbook_closes_the_same_request(ctx: AgentContext) -> None:
    bus = bus_with(ctx, ("triage", *INVESTIGATORS, "synthesis"))
    # Raw JSON, no envelope: each record gets an envelope id of its own (from its offset),
    # yet both are filed under the alert's request id.
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(FIRING), key=b"c0ffee1234abcd")
    await bus.run_until_idle()
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(resolved(FIRING)), key=b"c0ffee1234abcd")
    await bus.run_until_idle()

    rid = expected_id(FIRING)
    assert rid == expected_id(resolved(FIRING))
    (first_rid, first_id, runbook), (closing_rid, closing_id, closing) = results(bus)
    assert first_rid == closing_rid == rid == runbook.request_id == closing.request_id
    assert first_id != closing_id  # consumers deduping by result id keep both
    assert runbook.resolution is None and len(runbook.findings) == 4
    assert closing.resolution is not None and closing.resolution.during == "after"
    assert closing.resolution.resolved_at is not None
    assert closing.text.startswith("Resolved:")
    assert closing.source_id == runbook.source_id == "c0ffee1234abcd"
    assert len(bus.records(TRIAGE_DECISIONS.name)) == 1  # no second investigation


async def test_resolved_while_investigating_finishes_the_request_resolved(
        ctx: AgentContext) -> None:
    # No investigators run: the request stays open in synthesis until the alert resolves.
    bus = bus_with(ctx, ("triage", "synthesis"))
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(FIRING), key=b"c0ffee1234abcd")
    await bus.run_until_idle()
    assert results(bus) == []
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(resolved(FIRING)), key=b"c0ffee1234abcd")
    await bus.run_until_idle()

    ((rid, _, result),) = results(bus)
    assert rid == expected_id(FIRING)
    assert result.resolution is not None and result.resolution.during == "investigation"
    assert result.status == "partial" and len(result.missing) == 4
    assert "while it was being investigated" in result.text


async def test_resolution_for_an_unseen_request_waits_for_the_grace_then_closes(
        ctx: AgentContext) -> None:
    bus = bus_with(ctx, ("triage",))
    synthesis = build("synthesis", AgentContext(store=ctx.store, provider=OfflineProvider(),
                                                defaults={"replay_grace_s": 3600}))
    bus.add(synthesis)
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(resolved(FIRING)), key=b"c0ffee1234abcd")
    await bus.run_until_idle()
    (closure,) = [TRIAGE_CLOSURES.decode(r.value or b"")
                  for r in bus.records(TRIAGE_CLOSURES.name)]
    assert closure.request_id == expected_id(FIRING)
    await bus.tick(synthesis)
    assert results(bus) == []  # a plan may still be on its way: wait out the grace first
    # (test_agents.py::test_resolved_alert_needs_no_investigation ticks past a zero grace)


async def test_mixed_notification_investigates_the_firing_and_closes_the_resolved(
        ctx: AgentContext) -> None:
    body = copy.deepcopy(FIRING)
    gone = copy.deepcopy(body["alerts"][0])
    gone.update(status="resolved", fingerprint="deadbeef00000001",
                startsAt="2026-11-21T12:00:00Z", endsAt="2026-11-21T13:00:00Z")
    gone["labels"] = {**gone["labels"], "instance": "other:8080"}
    body["alerts"].insert(0, gone)
    bus = bus_with(ctx, ("triage",))
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(body), key=b"x")
    await bus.run_until_idle()

    (decision,) = [TRIAGE_DECISIONS.decode(r.value or b"")
                   for r in bus.records(TRIAGE_DECISIONS.name)]
    (closure,) = [TRIAGE_CLOSURES.decode(r.value or b"")
                  for r in bus.records(TRIAGE_CLOSURES.name)]
    assert decision.subject.source_id == "c0ffee1234abcd"
    assert decision.request_id == expected_id(body)
    assert closure.source_id == "deadbeef00000001"
    assert closure.request_id == alert_request_id(AlertmanagerAlert.model_validate(gone))
    assert closure.request_id != decision.request_id


def test_request_id_is_the_alerts_identity_and_episode() -> None:
    base = {"labels": {"alertname": "A"}, "fingerprint": "f1",
            "startsAt": "2026-11-21T17:20:23.123456789Z"}

    def rid(**changes: Any) -> str:
        return alert_request_id(AlertmanagerAlert.model_validate({**base, **changes}))

    # Alertmanager's webhook writes nanoseconds, its API milliseconds: one alert either way.
    assert rid() == rid(startsAt="2026-11-21T17:20:23.123Z")
    assert rid() == rid(startsAt="2026-11-21T18:20:23.123+01:00", status="resolved",
                        endsAt="2026-11-21T18:00:00Z")
    assert rid() != rid(startsAt="2026-11-21T19:00:00Z")  # fired again later: a new request
    assert rid() != rid(fingerprint="f2")
    # Without a fingerprint the labels identify the alert, in any order.
    a = rid(fingerprint=None, labels={"alertname": "A", "job": "x"})
    assert a == rid(fingerprint=None, labels={"job": "x", "alertname": "A"})
    assert a != rid(fingerprint=None, labels={"alertname": "A", "job": "y"})


def group_of(count: int) -> dict[str, Any]:
    """One Alertmanager notification carrying `count` alerts of one group."""
    body = copy.deepcopy(FIRING)
    template = body["alerts"][0]
    body["alerts"] = [dict(copy.deepcopy(template), fingerprint=f"{i:016x}",
                           labels={**template["labels"], "instance": f"node-{i}:8080"})
                      for i in range(count)]
    return body


async def test_a_resolved_group_closes_its_request_with_one_result(ctx: AgentContext) -> None:
    """300 resolved alerts in one notification: one closure and one closing result, for the
    request the notification names, not one per alert."""
    bus = MemoryBus()
    bus.add(build("triage", ctx))
    synthesis = build("synthesis", ctx)
    bus.add(synthesis)
    body = resolved(group_of(300))
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(body), key=b"g")
    await bus.run_until_idle()
    await bus.tick(synthesis)
    await bus.run_until_idle()

    (closure,) = [TRIAGE_CLOSURES.decode(r.value or b"")
                  for r in bus.records(TRIAGE_CLOSURES.name)]
    ((rid, _, result),) = results(bus)
    assert rid == closure.request_id == expected_id(body) == result.request_id
    assert result.resolution is not None


async def test_a_notification_over_the_alert_cap_is_dead_lettered(ctx: AgentContext) -> None:
    ctx.defaults = {**ctx.defaults, "max_alerts": 10}  # COUNTERPOINT_MAX_ALERTS=10
    bus = bus_with(ctx, ("triage",))
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(group_of(11)), key=b"g")
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(resolved(group_of(11))), key=b"g")
    await bus.publish(INTAKE_ALERTS.name, orjson.dumps(group_of(10)), key=b"g")
    await bus.run_until_idle()

    letters = [DeadLetter.from_record(r) for r in bus.records(DEADLETTER_NAME)]
    assert [(d.reason, d.agent) for d in letters] == [("too-many-alerts", "triage")] * 2
    assert "carries 11 alerts; the limit is 10 (COUNTERPOINT_MAX_ALERTS" in letters[0].message
    assert bus.records(TRIAGE_CLOSURES.name) == []
    assert len(bus.records(TRIAGE_DECISIONS.name)) == 1  # the one at the cap is triaged
