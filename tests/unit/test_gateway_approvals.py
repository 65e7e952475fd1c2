"""`POST /v1/approvals/{id}` and the actions in `GET /v1/requests/{id}`, through the ASGI app.

The approvals come from a real pipeline run on the in-memory bus, fed into the gateway's index
the way its progress reader feeds it. Publishing goes to a recording sender (the integration
test approves over a real broker).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.demo import example
from counterpoint.infra.gateway import create_app
from counterpoint.infra.gateway_auth import parse_approvers
from counterpoint.infra.gateway_state import RequestIndex
from counterpoint.schemas.approvals import ApprovalDecision
from counterpoint.topics.registry import (
    ACTIONS_EXECUTED,
    APPROVALS_DECIDED,
    APPROVALS_ESCALATED,
    APPROVALS_REQUESTED,
    INTAKE_TICKETS,
    INVESTIGATION_FINDINGS,
    SYNTHESIS_RESULTS,
    TRIAGE_DECISIONS,
)
from tests.unit.test_gateway import DEAD, client, fields

TOPICS = (TRIAGE_DECISIONS, INVESTIGATION_FINDINGS, SYNTHESIS_RESULTS, APPROVALS_REQUESTED,
          APPROVALS_DECIDED, APPROVALS_ESCALATED, ACTIONS_EXECUTED)


class Recorder:
    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus
        self.sent: list[tuple[str, bytes, bytes | None]] = []

    async def send(self, topic: str, value: bytes, *, key: bytes | None,
                   headers: Sequence[tuple[str, bytes]]) -> tuple[int, int]:
        self.sent.append((topic, value, key))
        await self.bus.publish(topic, value, key=key, headers=list(headers))
        return 0, len(self.sent)


KEYS = Keyring.ephemeral()
APPROVERS = parse_approvers('{"alice": "alice-token", "bob": "sha256:'
                            + hashlib.sha256(b"bob-token").hexdigest() + '"}')


def gateway_app(**kw: Any) -> FastAPI:
    return create_app(DEAD, track=False, token="s3cret", approvers=APPROVERS, keys=KEYS, **kw)


@pytest.fixture
async def world(tmp_path: Path) -> tuple[MemoryBus, FastAPI, Recorder]:
    ctx = AgentContext(store=BusinessStore.open(tmp_path / "business.db"),
                       provider=OfflineProvider(), keys=KEYS)
    bus = MemoryBus()
    for name in AGENT_NAMES:
        bus.add(build(name, ctx))
    await bus.publish(INTAKE_TICKETS.name, example("ticket_dual_intent.json"), key=b"T-1001")
    await bus.run_until_idle()
    gateway = gateway_app()
    recorder = Recorder(bus)
    gateway.state.publisher.send = recorder.send  # the route publishes through this object
    _feed(bus, gateway.state.index)
    return bus, gateway, recorder


def _feed(bus: MemoryBus, index: RequestIndex) -> None:
    for topic in TOPICS:
        for record in bus.records(topic.name):
            index.apply(record)


def _approval(app: FastAPI, action: str) -> tuple[str, str]:
    item = next(a for a in app.state.index.book.actions.values() if a.action.action == action)
    return item.approval_id, item.request_id


AUTH = {"Authorization": "Bearer s3cret"}  # the API token: may read, may not decide
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}


async def test_approve_publishes_the_decision_and_the_record_shows_what_ran(
        world: tuple[MemoryBus, FastAPI, Recorder]) -> None:
    bus, gateway, recorder = world
    aid, rid = _approval(gateway, "refund")
    async with client(gateway) as http:
        r = await http.post(f"/v1/approvals/{aid}", headers=ALICE,
                            json={"decision": "approve", "reason": "verified"})
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["decision"] == "approved" and body["decided_by"] == "alice"
        assert body["status_url"].endswith(f"/v1/requests/{rid}")
        ((topic, value, key),) = recorder.sent
        assert topic == APPROVALS_DECIDED.name and key == rid.encode()
        sent = ApprovalDecision.model_validate_json(value)
        assert sent.via == "person" and sent.decided_by == "alice"
        assert sent.signature is not None
        assert sent.signature.key_id == KEYS.signer("gateway").key_id

        await bus.run_until_idle()  # the executor runs it
        _feed(bus, gateway.state.index)
        r = await http.get(f"/v1/requests/{rid}", headers=AUTH)
        assert r.status_code == 200
        actions = {a["action"]: a for a in r.json()["actions"]}
        assert set(actions) == {"refund", "unlock_account", "send_password_reset"}
        refund = actions["refund"]
        assert refund["state"] == "approved" and refund["needs_approval"] is True
        assert refund["decision"]["by"] == "alice" and refund["decision"]["via"] == "person"
        assert refund["executed"]["outcome"] == "succeeded"
        assert "PAY-88122" in refund["executed"]["detail"]
        assert actions["unlock_account"]["state"] == "pending"
        assert actions["unlock_account"]["executed"] is None
        assert actions["send_password_reset"]["decision"]["by"] == "policy"

        # Decided now: a second decision is refused and nothing more is published.
        r = await http.post(f"/v1/approvals/{aid}", headers=BOB, json={"decision": "deny",
                                                                       "reason": "oops"})
        assert r.status_code == 409, r.text
        assert "already approved by alice" in r.json()["error"]
        assert len(recorder.sent) == 1


async def test_unknown_policy_decided_and_bad_bodies_are_refused(
        world: tuple[MemoryBus, FastAPI, Recorder]) -> None:
    _, gateway, recorder = world
    aid, _ = _approval(gateway, "unlock_account")
    low, _ = _approval(gateway, "send_password_reset")
    async with client(gateway) as http:
        r = await http.post("/v1/approvals/nope", headers=ALICE, json={"decision": "approve"})
        assert r.status_code == 404 and fields(r) == {"approval_id": "unknown"}
        r = await http.post(f"/v1/approvals/{low}", headers=ALICE, json={"decision": "approve"})
        assert r.status_code == 409 and "decided by policy" in r.json()["error"]
        bad: list[tuple[Any, str]] = [
            ({"decision": "maybe"}, "decision"),
            ({}, "decision"),
            ({"decision": "approve", "extra": 1}, "extra"),
            ([1], "(value)"),
        ]
        for payload, field in bad:
            r = await http.post(f"/v1/approvals/{aid}", headers=ALICE, json=payload)
            assert r.status_code == 422, (payload, r.text)
            assert field in fields(r), (payload, r.text)
        r = await http.post(f"/v1/approvals/{aid}", headers=ALICE, content=b"{not json")
        assert r.status_code == 400 and "(value)" in fields(r)
        r = await http.post(f"/v1/approvals/{aid}", headers=ALICE, json={"decision": "deny"})
        assert r.status_code == 422 and fields(r) == {"reason": "a denial needs a reason"}
        r = await http.post(f"/v1/approvals/{aid}", json={"decision": "approve"})
        assert r.status_code == 401 and fields(r) == {"Authorization": "missing"}
    assert recorder.sent == []


async def test_who_decides_is_the_token_never_the_body(
        world: tuple[MemoryBus, FastAPI, Recorder]) -> None:
    """Finding 2: a token holder approved as `security-officer@example.com`."""
    _, gateway, recorder = world
    aid, _ = _approval(gateway, "unlock_account")
    async with client(gateway) as http:
        r = await http.post(f"/v1/approvals/{aid}", headers=ALICE, json={
            "decision": "approve", "by": "security-officer@example.com"})
        assert r.status_code == 422 and "token" in fields(r)["by"]
        r = await http.post(f"/v1/approvals/{aid}", headers=AUTH, json={"decision": "approve"})
        assert r.status_code == 403 and "not an approver" in fields(r)["Authorization"]
        r = await http.post(f"/v1/approvals/{aid}", headers={"Authorization": "Bearer guess"},
                            json={"decision": "approve"})
        assert r.status_code == 401
        assert recorder.sent == []
        r = await http.post(f"/v1/approvals/{aid}", headers=BOB, json={"decision": "approve"})
        assert r.status_code == 202 and r.json()["decided_by"] == "bob"
    ((_, value, _),) = recorder.sent
    assert ApprovalDecision.model_validate_json(value).decided_by == "bob"


async def test_with_no_approvers_configured_nobody_decides_through_the_gateway(
        world: tuple[MemoryBus, FastAPI, Recorder]) -> None:
    bus, _, recorder = world
    open_gateway = create_app(DEAD, track=False, keys=KEYS)
    _feed(bus, open_gateway.state.index)
    aid, _ = _approval(open_gateway, "unlock_account")
    async with client(open_gateway) as http:
        r = await http.post(f"/v1/approvals/{aid}", json={"decision": "approve"})
    assert r.status_code == 403 and "COUNTERPOINT_APPROVERS" in r.json()["error"]
    assert recorder.sent == []


async def test_a_broker_that_does_not_acknowledge_gives_503(tmp_path: Path) -> None:
    ctx = AgentContext(store=BusinessStore.open(tmp_path / "business.db"),
                       provider=OfflineProvider(), keys=KEYS)
    bus = MemoryBus()
    for name in AGENT_NAMES:
        bus.add(build(name, ctx))
    await bus.publish(INTAKE_TICKETS.name, example("ticket_dual_intent.json"), key=b"T-1001")
    await bus.run_until_idle()
    gateway = gateway_app(publish_timeout_s=2.0)
    _feed(bus, gateway.state.index)
    aid, _ = _approval(gateway, "refund")
    async with client(gateway) as http:
        r = await http.post(f"/v1/approvals/{aid}", headers=ALICE, json={"decision": "approve"})
    assert r.status_code == 503, r.text
    assert "not published" in r.json()["error"]
