"""The two worked examples and the intake contracts, on a real broker with one OS process per
agent."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from counterpoint.bus.deadletter import DeadLetter
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import publish
from counterpoint.schemas.events import Result
from counterpoint.topics.registry import INTAKE_ALERTS, INTAKE_TICKETS, TRIAGE_DECISIONS
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config, send_raw, wait_deadletters, wait_results

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def ticket(**overrides: object) -> bytes:
    body = orjson.loads(example("ticket_dual_intent.json"))
    body.update({"id": f"T-{uuid.uuid4().hex[:8]}", **overrides})
    return orjson.dumps(body)


async def test_dual_intent_ticket_gets_one_reply_with_billing_and_account_findings(
        pipeline: AgentStack) -> None:
    receipt = await publish(config(pipeline.bootstrap), "ticket", ticket(), "test")

    (result,) = await wait_results(pipeline.bootstrap,
                                   lambda r: r.request_id == receipt.request_id)

    assert result.kind == "reply" and result.status == "complete", result
    assert result.source_id == receipt.source_id
    skills = {f.skill for f in result.findings}
    assert {"billing", "account"} <= skills
    billing = next(f for f in result.findings if f.skill == "billing")
    assert any("INV-2291" in fact.text and "twice" in fact.text for fact in billing.facts)
    account = next(f for f in result.findings if f.skill == "account")
    assert any("locked" in fact.text for fact in account.facts)
    assert result.customer is not None and result.customer["tier"] == "enterprise"
    assert result.generation.offline and "offline provider" in result.text
    assert result.usage.calls == 1 + len(result.findings) + 1

    # Exactly one distinct result for the request, even after waiting for stragglers.
    again = await wait_results(pipeline.bootstrap, lambda r: r.request_id == receipt.request_id,
                               count=2, timeout_s=3)
    assert len(again) == 1


async def test_alertmanager_alert_gets_a_runbook(pipeline: AgentStack) -> None:
    alert = orjson.loads(example("alert_alertmanager.json"))
    fingerprint = uuid.uuid4().hex[:16]
    alert["alerts"][0]["fingerprint"] = fingerprint
    receipt = await publish(config(pipeline.bootstrap), "alert", orjson.dumps(alert), "test")

    (result,) = await wait_results(pipeline.bootstrap,
                                   lambda r: r.request_id == receipt.request_id)

    assert result.kind == "runbook" and result.status == "complete"
    assert result.source_id == fingerprint
    focuses = {(f.skill, f.focus) for f in result.findings}
    assert {("infrastructure", "logs"), ("infrastructure", "metrics"),
            ("infrastructure", "deploys")} <= focuses
    assert any(f.skill == "knowledge" for f in result.findings)
    assert "v2.14.0" in result.text
    assert any(a.action == "rollback_deploy" and a.risk == "high"
               for a in result.proposed_actions)


async def test_raw_ticket_from_a_foreign_kafka_client_is_processed(pipeline: AgentStack) -> None:
    """confluent-kafka (librdkafka) publishes plain JSON, no envelope, no headers."""
    from confluent_kafka import Producer

    ticket_id = f"T-raw-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    producer.produce(INTAKE_TICKETS.name, key=ticket_id, value=json.dumps(
        {"id": ticket_id, "customer_id": "C-42", "body": "I was charged twice on my invoice",
         "priority_hint": "kept as an extra field"}))
    assert producer.flush(15) == 0

    (result,) = await wait_results(pipeline.bootstrap, lambda r: r.source_id == ticket_id)

    assert result.status == "complete"
    assert [f.skill for f in result.findings if f.skill != "knowledge"] == ["billing"]


async def test_malformed_input_is_dead_lettered_and_the_pipeline_keeps_going(
        pipeline: AgentStack) -> None:
    bad = {
        "not-json": (INTAKE_TICKETS.name, b"{this is not json", "undecodable"),
        "no-body": (INTAKE_TICKETS.name, orjson.dumps({"id": "T-x"}), "schema-violation"),
        "array": (INTAKE_TICKETS.name, b"[1, 2, 3]", "schema-violation"),
        "latin-1": (INTAKE_TICKETS.name, '{"id": "T-é", "body": "é"}'.encode("latin-1"),
                    "undecodable"),
        "empty-alert": (INTAKE_ALERTS.name, orjson.dumps(
            {"version": "4", "status": "firing", "groupKey": "g", "alerts": []}),
            "schema-violation"),
        "no-envelope-internal": (TRIAGE_DECISIONS.name, b'{"request_id": "x"}', "undecodable"),
    }
    coords = {}
    for name, (topic, value, _) in bad.items():
        coords[name] = (topic, *await send_raw(pipeline.bootstrap, topic, value))
    receipt = await publish(config(pipeline.bootstrap), "ticket", ticket(), "test")

    letters = await wait_deadletters(
        pipeline.bootstrap,
        lambda d: (d.source_topic, d.source_partition, d.source_offset) in coords.values(),
        count=len(bad))
    by_coord = {(d.source_topic, d.source_partition, d.source_offset): d for d in letters}
    for name, (_topic, value, reason) in bad.items():
        letter: DeadLetter = by_coord[coords[name]]
        assert letter.reason == reason, (name, letter)
        assert letter.record.value == value  # original bytes untouched
        assert letter.message and letter.agent in {"triage", "synthesis"}
    assert "body" in by_coord[coords["no-body"]].message
    assert "alerts" in by_coord[coords["empty-alert"]].message

    (result,) = await wait_results(pipeline.bootstrap,
                                   lambda r: r.request_id == receipt.request_id)
    assert result.status == "complete"
    assert pipeline.all_alive(), pipeline.logs()


def _cli(stack: AgentStack, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(__import__("sys").executable).with_name("counterpoint")
    return subprocess.run([str(exe), *args], env=stack.env, capture_output=True, text=True,
                          timeout=60, check=False)


async def test_one_trace_covers_every_process_a_request_touched(
        pipeline: AgentStack, tmp_path: Path) -> None:
    path = tmp_path / "ticket.json"
    path.write_bytes(ticket())
    published = await asyncio.to_thread(_cli, pipeline, "publish", "ticket", str(path),
                                        "--wait", "60")
    assert published.returncode == 0, published.stderr
    request_id = published.stdout.split("request id:")[1].split()[0]
    shown = " ".join(published.stdout.split())
    assert "status complete" in shown and "INV-2291" in shown  # --wait showed the result

    await asyncio.sleep(1)  # agents export their spans every 200 ms
    traced = await asyncio.to_thread(_cli, pipeline, "trace", request_id, "--json")
    assert traced.returncode == 0, traced.stderr
    spans = [json.loads(line) for line in traced.stdout.splitlines() if line.strip()]

    assert len({s["trace_id"] for s in spans}) == 1
    processes = {(s["service.name"], s["service.instance.id"]) for s in spans}
    services = {name for name, _ in processes}
    assert len(processes) >= 4, processes
    assert {"cli", "triage", "billing", "account", "synthesis"} <= services
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if s["parent_id"] not in ids]
    assert len(roots) == 1 and roots[0]["service.name"] == "cli"
    names = {s["name"] for s in spans}
    assert {"process intake.tickets", "process investigation.tasks.billing",
            "process investigation.findings", "send synthesis.results"} <= names
    for s in spans:
        assert {"trace_id", "span_id", "parent_id", "name", "start", "end",
                "attributes"} <= s.keys()
    result_send = next(s for s in spans if s["name"] == "send synthesis.results")
    assert result_send["attributes"]["counterpoint.request_id"] == request_id


def test_results_are_visible_through_the_cli(pipeline: AgentStack) -> None:
    shown = _cli(pipeline, "results", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = [Result.model_validate_json(line) for line in shown.stdout.splitlines() if line]
    assert rows, "earlier tests in this module published requests; results must list them"
    # Shown once per distinct result event.
    assert len({r.request_id for r in rows}) == len(rows)
