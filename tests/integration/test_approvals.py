"""Human approval end to end: real agent processes on the test broker, decisions from the CLI
(and one through the real gateway process), and forged decisions from a Kafka client that is
not ours (confluent-kafka), each dead-lettered with its reason while nothing runs.

A high-risk action waits; `counterpoint approve` (the real command, as a subprocess) approves
it; the executor runs it once even when the approval event is published twice; the request's
record (`counterpoint request`) shows who approved and what ran. A denied action never runs.
An undecided one (a synthesis process configured with a short time to decide) expires and
escalates, and never runs.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.bus.admin import group_lag
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.infra.approval_keys import load_keyring
from counterpoint.infra.demo import example
from counterpoint.infra.processes import Supervisor
from counterpoint.schemas.envelope import Envelope, derive_event_id, new_event_id, now
from counterpoint.topics.registry import (
    ACTIONS_EXECUTED,
    APPROVALS_DECIDED,
    APPROVALS_ESCALATED,
    APPROVALS_REQUESTED,
    INTAKE_TICKETS,
)
from tests.integration.conftest import AgentStack
from tests.integration.helpers import collect, send_raw, wait_deadletters
from tests.integration.test_gateway import Gateway
from tests.support.forgeries import INVENTED_APPROVAL, forgeries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXE = str(Path(sys.executable).with_name("counterpoint"))
WAIT_S = 90.0


@pytest.fixture(scope="module")
def stack(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"),
                       dict.fromkeys(AGENT_NAMES, 1),
                       extra_env={"COUNTERPOINT_APPROVAL_TTL_S": "3600"})
    try:
        stack.wait_joined(timeout_s=90)
        yield stack
    finally:
        stack.stop()


def cli(stack: AgentStack, *args: str, by: str = "alice") -> subprocess.CompletedProcess[str]:
    """The real command; `by` is who runs it (COUNTERPOINT_APPROVER: the development CLI key
    binds no identity)."""
    return subprocess.run([EXE, *args], env={**stack.env, "COLUMNS": "200",
                                             "COUNTERPOINT_APPROVER": by},
                          capture_output=True, text=True, timeout=120, check=False)


async def publish_ticket(bootstrap: str) -> str:
    ticket = orjson.loads(example("ticket_dual_intent.json"))
    ticket["id"] = sid = f"T-appr-{uuid.uuid4().hex[:8]}"
    rid = new_event_id()
    envelope = Envelope(id=rid, source="/tests/approvals", type="test", time=now(),
                        request_id=rid, subject=sid)
    await send_raw(bootstrap, INTAKE_TICKETS.name, orjson.dumps(ticket), key=sid.encode(),
                   headers=envelope.to_headers())
    return rid


def _of(rid: str, records: list[RawRecord]) -> list[tuple[Envelope, dict[str, Any]]]:
    out = []
    for r in records:
        env = Envelope.from_headers(r.headers)
        if env is not None and env.request_id == rid and r.value is not None:
            out.append((env, orjson.loads(r.value)))
    return out


async def wait_for(bootstrap: str, topic: str, rid: str,
                   done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    records = await collect(bootstrap, topic, lambda rs: done([v for _, v in _of(rid, rs)]),
                            WAIT_S)
    found = [v for _, v in _of(rid, records)]
    assert done(found), f"{topic}: not there within {WAIT_S}s for {rid}: {found}"
    return found


def actions(values: list[dict[str, Any]]) -> set[str]:
    return {v["action"]["action"] for v in values}


async def approval_id(bootstrap: str, rid: str, action: str) -> str:
    requested = await wait_for(bootstrap, APPROVALS_REQUESTED.name, rid,
                               lambda vs: {"refund", "unlock_account"} <= actions(vs))
    return str(next(v["approval_id"] for v in requested if v["action"]["action"] == action))


async def executed(bootstrap: str, rid: str, action: str) -> list[tuple[Envelope, dict[str, Any]]]:
    await wait_for(bootstrap, ACTIONS_EXECUTED.name, rid, lambda vs: action in actions(vs))
    records = await collect(bootstrap, ACTIONS_EXECUTED.name, lambda _: False, 2)
    return [(e, v) for e, v in _of(rid, records) if v["action"]["action"] == action]


async def drained(bootstrap: str, group: str, topic: str) -> None:
    """Until the group has committed everything on `topic`: every copy was handled."""
    for _ in range(int(WAIT_S * 4)):
        if all(p.lag == 0 for p in await group_lag(bootstrap, group, [topic])):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{group} still has records waiting on {topic}")


def db(stack: AgentStack) -> sqlite3.Connection:
    return sqlite3.connect(stack.home / "business.db")


async def test_high_risk_action_waits_is_approved_from_the_cli_and_runs_exactly_once(
        stack: AgentStack) -> None:
    bootstrap = stack.bootstrap
    rid = await publish_ticket(bootstrap)
    refund = await approval_id(bootstrap, rid, "refund")
    # The low-risk action ran by policy (so the executor is up); the refund only waits.
    (_, reset), = await executed(bootstrap, rid, "send_password_reset")
    assert reset["outcome"] == "succeeded" and reset["decided_by"] == "policy"
    ran = await collect(bootstrap, ACTIONS_EXECUTED.name, lambda _: False, 2)
    assert "refund" not in actions([v for _, v in _of(rid, ran)])

    listed = cli(stack, "approvals", "--json")
    assert listed.returncode == 0, listed.stderr
    pending = [orjson.loads(line) for line in listed.stdout.splitlines()]
    mine = {p["action"]: p for p in pending if p["request_id"] == rid}
    assert set(mine) == {"refund", "unlock_account"}
    assert mine["refund"]["risk"] == "high" and mine["refund"]["state"] == "pending"

    approved = cli(stack, "approve", refund[:10], by="alice")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "approved" in approved.stdout and "alice" in approved.stdout

    # The approval event twice more: the very same record (a redelivery), and the same
    # decision under another event id (a second publisher). Neither may refund again.
    decided = await collect(bootstrap, APPROVALS_DECIDED.name, lambda _: False, 2)
    (record,) = [r for r in decided if (e := Envelope.from_headers(r.headers))
                 and e.request_id == rid and b'"alice"' in (r.value or b"")]
    await send_raw(bootstrap, APPROVALS_DECIDED.name, record.value or b"", key=record.key,
                   headers=record.headers)
    env = Envelope.from_headers(record.headers)
    assert env is not None
    again = env.model_copy(update={"id": derive_event_id(env.id, "again")})
    await send_raw(bootstrap, APPROVALS_DECIDED.name, record.value or b"", key=record.key,
                   headers=again.to_headers())
    await drained(bootstrap, "counterpoint.executor", APPROVALS_DECIDED.name)

    copies = await executed(bootstrap, rid, "refund")
    assert len({e.id for e, _ in copies}) == 1, copies  # one outcome event, however many copies
    assert {v["outcome"] for _, v in copies} == {"succeeded"}
    assert "PAY-88122" in copies[0][1]["detail"] and copies[0][1]["decided_by"] == "alice"
    with db(stack) as conn:
        assert conn.execute("SELECT count(*) FROM refunds").fetchone()[0] == 1
        assert conn.execute("SELECT status FROM payments WHERE id = 'PAY-88122'"
                            ).fetchone()[0] == "refunded"
        assert conn.execute("SELECT count(*) FROM executed_actions WHERE action_id = ?",
                            (refund,)).fetchone()[0] == 1

    twice = cli(stack, "approve", refund, by="bob")
    assert twice.returncode == 1 and "already approved by alice" in " ".join(twice.stderr.split())

    record_json = cli(stack, "request", rid, "--json")
    assert record_json.returncode == 0, record_json.stderr
    shown = {a["action"]: a for a in orjson.loads(record_json.stdout)["actions"]}
    assert shown["refund"]["decision"]["by"] == "alice"
    assert shown["refund"]["decision"]["via"] == "person"
    assert shown["refund"]["executed"]["outcome"] == "succeeded"
    assert shown["refund"]["later_decisions_ignored"] == 1
    assert shown["unlock_account"]["state"] == "pending"
    assert shown["send_password_reset"]["decision"]["by"] == "policy"
    text = cli(stack, "request", rid)
    assert text.returncode == 0
    flat = " ".join(text.stdout.split())
    assert "approved by alice" in flat and "succeeded: refunded PAY-88122" in flat


async def test_denied_action_never_runs(stack: AgentStack) -> None:
    bootstrap = stack.bootstrap
    rid = await publish_ticket(bootstrap)
    unlock = await approval_id(bootstrap, rid, "unlock_account")

    no_reason = cli(stack, "deny", unlock)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    unknown = cli(stack, "approve", "0123456789ab")
    assert unknown.returncode == 2 and "no approval" in unknown.stderr

    denied = cli(stack, "deny", unlock[:8], "--reason", "identity not verified", by="carol")
    assert denied.returncode == 0, denied.stdout + denied.stderr
    ((_, outcome),) = {e.id: (e, v) for e, v in await executed(bootstrap, rid,
                                                                 "unlock_account")}.values()
    assert outcome["outcome"] == "skipped"
    assert "denied by carol: identity not verified" in outcome["detail"]
    late = cli(stack, "approve", unlock, by="mallory")
    assert late.returncode == 1 and "already denied" in late.stderr
    await drained(bootstrap, "counterpoint.executor", APPROVALS_DECIDED.name)
    with db(stack) as conn:
        assert conn.execute("SELECT status FROM accounts WHERE customer_id = 'C-42'"
                            ).fetchone()[0] == "locked"
        assert conn.execute("SELECT outcome FROM executed_actions WHERE action_id = ?",
                            (unlock,)).fetchone()[0] == "skipped"


ERIN = {"Authorization": "Bearer erin-token"}


@pytest.fixture
def gateway(stack: AgentStack) -> Iterator[str]:
    """`counterpoint gateway` as its own process against the stack's broker; erin approves."""
    gw = Gateway(stack.bootstrap, stack.home, None,
                 {"COUNTERPOINT_APPROVERS": '{"erin": "erin-token"}'})
    yield gw.url
    gw.stop()


async def test_approved_through_the_gateway_and_its_record_shows_what_ran(
        stack: AgentStack, gateway: str) -> None:
    rid = await publish_ticket(stack.bootstrap)
    unlock = await approval_id(stack.bootstrap, rid, "unlock_account")
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        for _ in range(int(WAIT_S * 4)):  # until the gateway's reader has seen the approval
            # A denial without a reason: 404 while unknown, then 422, and nothing published.
            r = await http.post(f"/v1/approvals/{unlock}", headers=ERIN,
                                json={"decision": "deny"})
            if r.status_code != 404:
                break
            await asyncio.sleep(0.25)
        assert r.status_code == 422, r.text
        assert r.json()["fields"] == [{"field": "reason", "problem": "a denial needs a reason"}]
        r = await http.post("/v1/approvals/not-an-approval", headers=ERIN,
                            json={"decision": "approve"})
        assert r.status_code == 404, r.text
        r = await http.post(f"/v1/approvals/{unlock}", json={"decision": "approve"})
        assert r.status_code == 401, r.text  # who decides is the token's owner
        r = await http.post(f"/v1/approvals/{unlock}", headers=ERIN,
                            json={"decision": "approve"})
        assert r.status_code == 202, r.text
        status_url = r.json()["status_url"]
        shown: dict[str, Any] = {}
        for _ in range(int(WAIT_S * 4)):
            body = (await http.get(status_url, headers=ERIN)).json()
            shown = {a["action"]: a for a in body["actions"]}
            if shown.get("unlock_account", {}).get("executed"):
                break
            await asyncio.sleep(0.25)
        unlocked = shown["unlock_account"]
        assert unlocked["decision"]["by"] == "erin" and unlocked["state"] == "approved"
        assert unlocked["executed"]["outcome"] == "succeeded", unlocked
        assert shown["refund"]["state"] == "pending" and shown["refund"]["executed"] is None
        r = await http.post(f"/v1/approvals/{unlock}", headers=ERIN,
                            json={"decision": "deny", "reason": "changed my mind"})
        assert r.status_code == 409 and "already approved by erin" in r.json()["error"]


async def test_forged_decisions_from_any_kafka_client_are_dead_lettered_and_nothing_runs(
        stack: AgentStack) -> None:
    """Finding 1: decisions written to approvals.decided by a client that is not ours ran.
    Each forgery gets the CloudEvents headers a real decision has, so only the checks stand
    between it and the executor; it must be dead-lettered with its reason and run nothing."""
    from confluent_kafka import Producer as Outsider

    bootstrap = stack.bootstrap
    rid = await publish_ticket(bootstrap)
    refund_id = await approval_id(bootstrap, rid, "refund")
    (real,) = [APPROVALS_REQUESTED.decode(r.value or b"") for r in await collect(
        bootstrap, APPROVALS_REQUESTED.name, lambda _: False, 1)
        if b'"' + refund_id.encode() + b'"' in (r.value or b"")][:1]
    made = forgeries(load_keyring(stack.home / "keys"), real)
    outsider = Outsider({"bootstrap.servers": bootstrap})
    sent: dict[str, str] = {}
    for name, (value, _) in made.items():
        target = orjson.loads(value)["request_id"]
        event_id = sent[name] = new_event_id()
        envelope = Envelope(id=event_id, source="/mallory", type=APPROVALS_DECIDED.ce_type,
                            time=now(), request_id=target)
        outsider.produce(APPROVALS_DECIDED.name, value=value, key=target.encode(),
                         headers=envelope.to_headers())
    assert outsider.flush(30) == 0

    def ours(d: DeadLetter) -> bool:
        headers = dict(d.record.headers)
        return d.agent == "executor" and headers.get("ce_id", b"").decode() in sent.values()

    letters = await wait_deadletters(bootstrap, ours, len(made), timeout_s=WAIT_S)
    by_id = {dict(d.record.headers)["ce_id"].decode(): d for d in letters}
    for name, (value, reason) in made.items():
        letter = by_id[sent[name]]
        assert letter.reason == reason, (name, letter.message)
        assert letter.record.value == value  # the original bytes, untouched
    await drained(bootstrap, "counterpoint.executor", APPROVALS_DECIDED.name)
    ran = await collect(bootstrap, ACTIONS_EXECUTED.name, lambda _: False, 2)
    touched = {orjson.loads(r.value or b"")["action_id"] for r in ran}
    assert refund_id not in touched and INVENTED_APPROVAL not in touched
    with db(stack) as conn:
        assert conn.execute("SELECT count(*) FROM executed_actions WHERE action_id IN (?, ?)",
                            (refund_id, INVENTED_APPROVAL)).fetchone()[0] == 0
        assert conn.execute("SELECT status FROM accounts WHERE customer_id = 'C-77'"
                            ).fetchone() in (None, ("locked",))
    # Nobody is misled either: the refund still waits for a person.
    listed = cli(stack, "approvals", "--json")
    mine = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [p["state"] for p in mine if p["approval_id"] == refund_id] == ["pending"]


async def test_undecided_approval_expires_and_escalates(stack: AgentStack) -> None:
    """A synthesis process that gives people 2 seconds takes over from the stack's."""
    bootstrap = stack.bootstrap
    (old,) = [p for p in stack.supervisor.processes if p.name == "synthesis"]
    old.popen.send_signal(signal.SIGTERM)
    old.popen.wait(timeout=30)
    short = Supervisor(stack.home / "logs-short-ttl",
                       env={**stack.env, "COUNTERPOINT_APPROVAL_TTL_S": "2"}, restart=False)
    short.start({"synthesis": 1})
    try:
        for _ in range(int(WAIT_S * 5)):
            if short.processes[0].joined:
                break
            await asyncio.sleep(0.2)
        rid = await publish_ticket(bootstrap)
        escalations = await wait_for(bootstrap, APPROVALS_ESCALATED.name, rid,
                                     lambda vs: {"refund", "unlock_account"} <= actions(vs))
        assert all("ESCALATED" in v["text"] and "NOT executed" in v["text"]
                   for v in escalations)
        expired = await wait_for(bootstrap, APPROVALS_DECIDED.name, rid,
                                 lambda vs: {"refund", "unlock_account"} <= actions(
                                     [v for v in vs if v["decision"] == "expired"]))
        assert {v["decided_by"] for v in expired if v["decision"] == "expired"} == {
            "approvals desk"}
        for action in ("refund", "unlock_account"):
            outcomes = {v["outcome"] for _, v in await executed(bootstrap, rid, action)}
            assert outcomes == {"skipped"}, (action, outcomes)
        record = cli(stack, "request", rid, "--json")
        shown = {a["action"]: a for a in orjson.loads(record.stdout)["actions"]}
        assert shown["refund"]["state"] == "expired"
        assert "ESCALATED" in shown["refund"]["escalated"]
        listed = cli(stack, "approvals", "--json")
        assert rid not in listed.stdout  # expired approvals no longer wait
    finally:
        short.stop()
