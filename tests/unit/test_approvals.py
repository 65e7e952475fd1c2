"""Human approval as events, on the in-memory bus: risk policy, the approval desk, the executor.

The whole pipeline runs (offline provider), so the approvals come from real results. Decisions
by people are published the way the CLI publishes them (infra/approvals.py).
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from counterpoint.agents.approval_policy import ApprovalPolicy, parse_risk_table
from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.actions import ActionLedger
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.agent import Agent
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.approvals import (
    ActionRecord,
    ApprovalBook,
    ApprovalError,
    check_decidable,
    make_decision,
    send_decision,
)
from counterpoint.infra.demo import example
from counterpoint.schemas.approvals import (
    ActionSpec,
    ApprovalDecision,
    ApprovalRequested,
    action_id,
)
from counterpoint.schemas.envelope import Envelope, now
from counterpoint.schemas.events import ProposedAction
from counterpoint.topics.registry import (
    ACTIONS_EXECUTED,
    APPROVALS_DECIDED,
    APPROVALS_ESCALATED,
    APPROVALS_REQUESTED,
    DEADLETTER_NAME,
    INTAKE_TICKETS,
)


class _BusSender:
    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus

    async def send(self, topic: str, value: bytes, *, key: bytes | None,
                   headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]
                   ) -> tuple[int, int]:
        await self.bus.publish(topic, value, key=key, headers=list(headers))
        return 0, 0


KEYS = Keyring.ephemeral()  # every context of this module signs and trusts these
PERSON = KEYS.signer("cli")


def _ctx(tmp_path: Path, policy: ApprovalPolicy | None = None) -> AgentContext:
    return AgentContext(store=BusinessStore.open(tmp_path / "business.db"),
                        provider=OfflineProvider(), approvals=policy or ApprovalPolicy(),
                        keys=KEYS)


def _pipeline(ctx: AgentContext) -> tuple[MemoryBus, dict[str, Agent]]:
    bus = MemoryBus()
    agents = {name: build(name, ctx) for name in AGENT_NAMES}
    for agent in agents.values():
        bus.add(agent)
    return bus, agents


def _book(bus: MemoryBus) -> ApprovalBook:
    book = ApprovalBook(KEYS.trust, ApprovalPolicy())
    for topic in (APPROVALS_REQUESTED, APPROVALS_DECIDED, APPROVALS_ESCALATED, ACTIONS_EXECUTED):
        for record in bus.records(topic.name):
            book.apply(record)
    return book


def _db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(tmp_path / "business.db")


def _payment_status(tmp_path: Path, payment: str) -> str:
    with _db(tmp_path) as db:
        return str(db.execute("SELECT status FROM payments WHERE id = ?", (payment,))
                   .fetchone()[0])


def _account_status(tmp_path: Path, customer: str) -> str:
    with _db(tmp_path) as db:
        return str(db.execute("SELECT status FROM accounts WHERE customer_id = ?", (customer,))
                   .fetchone()[0])


async def _ticket(bus: MemoryBus) -> ApprovalBook:
    await bus.publish(INTAKE_TICKETS.name, example("ticket_dual_intent.json"), key=b"T-1001")
    await bus.run_until_idle()
    return _book(bus)


async def _decide(bus: MemoryBus, book: ApprovalBook, action: str, verdict: str,
                  by: str = "alice", reason: str = "") -> ApprovalDecision:
    (item,) = [a for a in book.actions.values() if a.action.action == action]
    decision = make_decision(item, verdict, by, reason, PERSON)  # type: ignore[arg-type]
    await send_decision(_BusSender(bus), item, decision, source="/tests")
    return decision


def _executed_ids(bus: MemoryBus) -> set[bytes]:
    return {dict(r.headers)["ce_id"] for r in bus.records(ACTIONS_EXECUTED.name)}


# --- policy ---------------------------------------------------------------------------------


def test_risk_comes_from_the_configured_table_and_unknown_kinds_are_high() -> None:
    policy = ApprovalPolicy.configured({"restart_service": "high"})
    governed = policy.govern([
        ProposedAction(action="restart_service", target="x", risk="low"),
        ProposedAction(action="send_password_reset", target="C-1", risk="high"),
        ProposedAction(action="drop_database", target="prod", risk="low"),
    ])
    assert [p.risk for p in governed] == ["high", "low", "high"]


def test_threshold_decides_what_waits_for_a_person() -> None:
    waits = {t: [ApprovalPolicy(threshold=t).needs_approval(r) for r in ("low", "medium", "high")]
             for t in ("none", "low", "medium", "high")}
    assert waits == {"none": [True, True, True], "low": [False, True, True],
                     "medium": [False, False, True], "high": [False, False, False]}


def test_risk_table_setting_is_json_or_a_file_and_errors_name_the_problem(
        tmp_path: Path) -> None:
    assert parse_risk_table('{"refund": "medium"}') == {"refund": "medium"}
    path = tmp_path / "risk.json"
    path.write_text('{"unlock_account": "low"}')
    assert parse_risk_table(str(path)) == {"unlock_account": "low"}
    with pytest.raises(ValueError, match="refund='urgent'"):
        parse_risk_table('{"refund": "urgent"}')
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_risk_table("{refund")
    with pytest.raises(ValueError, match="readable file"):
        parse_risk_table(str(tmp_path / "missing.json"))


# --- synthesis -> approvals -----------------------------------------------------------------


async def test_risky_actions_wait_and_low_risk_ones_run_by_policy(tmp_path: Path) -> None:
    bus, _ = _pipeline(_ctx(tmp_path))
    book = await _ticket(bus)
    states = {a.action.action: (a.action.risk, a.state, a.requested is not None)
              for a in book.actions.values()}
    assert states == {"refund": ("high", "pending", True),
                      "unlock_account": ("medium", "pending", True),
                      "send_password_reset": ("low", "approved", False)}
    (ran,) = [a for a in book.actions.values() if a.executed is not None]
    assert ran.action.action == "send_password_reset" and ran.executed is not None
    assert ran.executed.outcome == "succeeded" and ran.decision is not None
    assert ran.decision.decided_by == "policy"
    # Waiting is not executing: nothing was refunded or unlocked.
    assert _payment_status(tmp_path, "PAY-88122") == "succeeded"
    assert _account_status(tmp_path, "C-42") == "locked"
    assert bus.records(DEADLETTER_NAME) == []


async def test_approved_action_runs_once_however_often_its_approval_arrives(
        tmp_path: Path) -> None:
    bus, _ = _pipeline(_ctx(tmp_path))
    book = await _ticket(bus)
    await _decide(bus, book, "refund", "approve")
    await bus.run_until_idle()
    first = bus.records(APPROVALS_DECIDED.name)[-1]
    # The same approval event again (a redelivery), and a second person approving as well.
    await bus.publish(first.topic, first.value or b"", key=first.key, headers=first.headers)
    await _decide(bus, book, "refund", "approve", by="bob")
    await bus.run_until_idle()

    refund = next(a for a in _book(bus).actions.values() if a.action.action == "refund")
    assert refund.decision is not None and refund.decision.decided_by == "alice"
    assert refund.executed is not None and refund.executed.outcome == "succeeded"
    assert "PAY-88122" in refund.executed.detail
    assert _payment_status(tmp_path, "PAY-88122") == "refunded"
    assert _payment_status(tmp_path, "PAY-88121") == "succeeded"
    with _db(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM refunds").fetchone()[0] == 1
    copies = [r for r in bus.records(ACTIONS_EXECUTED.name)
              if orjson.loads(r.value or b"")["action_id"] == refund.approval_id]
    # The bus skipped the byte-identical copy; bob's approval re-emitted the recorded outcome.
    assert len(copies) == 2
    assert len({dict(r.headers)["ce_id"] for r in copies}) == 1
    assert len({r.value for r in copies}) == 1


async def test_denied_action_never_runs_and_a_later_approval_does_not_revive_it(
        tmp_path: Path) -> None:
    bus, _ = _pipeline(_ctx(tmp_path))
    book = await _ticket(bus)
    await _decide(bus, book, "unlock_account", "deny", reason="identity not verified")
    await bus.run_until_idle()
    await _decide(bus, book, "unlock_account", "approve", by="mallory")
    await bus.run_until_idle()
    unlock = next(a for a in _book(bus).actions.values() if a.action.action == "unlock_account")
    assert unlock.state == "denied" and len(unlock.ignored) == 1
    assert unlock.executed is not None and unlock.executed.outcome == "skipped"
    assert "denied by alice: identity not verified" in unlock.executed.detail
    assert _account_status(tmp_path, "C-42") == "locked"
    with pytest.raises(ApprovalError, match="already denied by alice") as exc:
        check_decidable(unlock)
    assert exc.value.kind == "decided"


def _waiting(request_id: str = "req-9", action: str = "refund",
             target: str = "C-42") -> ActionRecord:
    """An action waiting for a person, its request signed by synthesis's key."""
    spec = ActionSpec(action=action, target=target, risk="high")
    aid = action_id(request_id, action, target)
    request = KEYS.signer("synthesis").seal("proposal", ApprovalRequested(
        approval_id=aid, request_id=request_id, source_id="T-9", action=spec, reason="test",
        requested_at=now(), expires_at=now() + timedelta(hours=1)))
    item = ApprovalBook(KEYS.trust, ApprovalPolicy())._entry(aid, request_id, "T-9", spec)
    item.requested = request
    return item


def test_a_denial_needs_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ApprovalError, match="reason"):
        make_decision(_waiting(), "deny", "alice", "  ", PERSON)


# --- the desk -------------------------------------------------------------------------------


async def test_undecided_approval_expires_escalates_and_never_runs(tmp_path: Path) -> None:
    policy = ApprovalPolicy(ttl=timedelta(seconds=0))
    bus, agents = _pipeline(_ctx(tmp_path, policy))
    await _ticket(bus)
    desk = agents["approvals"]
    (req_record,) = [r for r in bus.records(APPROVALS_REQUESTED.name)
                     if b'"refund"' in (r.value or b"")]
    # Held: the desk's committed offset stays at the waiting request.
    assert bus.committed(desk, APPROVALS_REQUESTED.name, req_record.partition) <= \
        req_record.offset
    await bus.tick(desk)
    await bus.run_until_idle()
    book = _book(bus)
    for action in ("refund", "unlock_account"):
        item = next(a for a in book.actions.values() if a.action.action == action)
        assert item.state == "expired" and item.decision is not None
        assert item.decision.decided_by == "approvals desk"
        assert item.escalation is not None and "ESCALATED" in item.escalation.text
        assert item.executed is not None and item.executed.outcome == "skipped"
    assert bus.committed(desk, APPROVALS_REQUESTED.name, req_record.partition) > \
        req_record.offset
    # A person deciding after the expiry changes nothing, and the desk does not expire twice.
    await _decide(bus, book, "refund", "approve")
    await bus.tick(desk)
    await bus.run_until_idle()
    assert len(bus.records(APPROVALS_ESCALATED.name)) == 2
    refund = next(a for a in _book(bus).actions.values() if a.action.action == "refund")
    assert refund.state == "expired" and refund.executed is not None
    assert refund.executed.outcome == "skipped"
    assert _payment_status(tmp_path, "PAY-88122") == "succeeded"


async def test_a_decision_releases_the_hold_and_the_desk_does_not_expire_it(
        tmp_path: Path) -> None:
    bus, agents = _pipeline(_ctx(tmp_path, ApprovalPolicy(ttl=timedelta(seconds=0))))
    book = await _ticket(bus)
    await _decide(bus, book, "refund", "approve")
    await _decide(bus, book, "unlock_account", "approve")
    await bus.run_until_idle()
    await bus.tick(agents["approvals"])
    await bus.run_until_idle()
    assert bus.records(APPROVALS_ESCALATED.name) == []
    desk = agents["approvals"]
    for r in bus.records(APPROVALS_REQUESTED.name):
        assert bus.committed(desk, APPROVALS_REQUESTED.name, r.partition) > r.offset


async def test_desk_restarted_rebuilds_pending_approvals_and_expires_them_once(
        tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, ApprovalPolicy(ttl=timedelta(seconds=0)))
    bus, agents = _pipeline(ctx)
    await _ticket(bus)  # two approvals wait; the desk has not checked expiries yet
    second = build("approvals", ctx)
    bus.restart(agents["approvals"], second)  # crash: resume from the committed offsets
    await bus.run_until_idle()
    await bus.tick(second)
    await bus.run_until_idle()
    escalated = {orjson.loads(r.value or b"")["action"]["action"]
                 for r in bus.records(APPROVALS_ESCALATED.name)}
    assert escalated == {"refund", "unlock_account"}
    third = build("approvals", ctx)
    bus.restart(second, third)  # and again: nothing is left pending, nothing expires twice
    await bus.run_until_idle()
    await bus.tick(third)
    await bus.run_until_idle()
    assert len(bus.records(APPROVALS_ESCALATED.name)) == 2
    assert {a.state for a in _book(bus).waiting_for_people()} == {"expired"}


async def test_a_decision_read_before_its_request_is_held_until_the_request_arrives(
        tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, ApprovalPolicy(ttl=timedelta(seconds=0)))
    desk = build("approvals", ctx)
    bus = MemoryBus()
    source = _pipeline(ctx)[0]
    await _ticket(source)
    book = _book(source)
    item = next(a for a in book.actions.values() if a.action.action == "refund")
    decision = make_decision(item, "approve", "alice", "", PERSON)
    await send_decision(_BusSender(bus), item, decision, source="/tests")
    bus.add(desk)
    await bus.run_until_idle()
    (held,) = bus.records(APPROVALS_DECIDED.name)
    assert bus.committed(desk, APPROVALS_DECIDED.name, held.partition) == held.offset
    request = next(r for r in source.records(APPROVALS_REQUESTED.name)
                   if b'"refund"' in (r.value or b""))
    await bus.publish(request.topic, request.value or b"", key=request.key,
                      headers=request.headers)
    await bus.run_until_idle()
    await bus.tick(desk)
    await bus.run_until_idle()
    assert bus.records(APPROVALS_ESCALATED.name) == []  # decided, so never expired
    assert bus.committed(desk, APPROVALS_DECIDED.name, held.partition) > held.offset


# --- the ledger -----------------------------------------------------------------------------


def test_two_executor_processes_settling_one_action_have_one_effect(tmp_path: Path) -> None:
    BusinessStore.open(tmp_path / "business.db").close()
    ledgers = [ActionLedger(tmp_path / "business.db", executed_by=f"executor {n}")
               for n in range(4)]
    decision = ApprovalDecision(
        approval_id="act-1", request_id="req-1", source_id="T-1001",
        action=ActionSpec(action="refund", target="C-42", risk="high"), decision="approved",
        decided_by="alice", via="person", decided_at=now())
    outcomes = []
    threads = [threading.Thread(target=lambda led=led: outcomes.append(led.settle(decision)))
               for led in ledgers for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 12 and len({o.model_dump_json() for o in outcomes}) == 1
    assert outcomes[0].outcome == "succeeded"
    with _db(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM refunds").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM payments WHERE status = 'refunded'"
                          ).fetchone()[0] == 1


def test_a_tool_that_cannot_act_records_failed_and_leaves_nothing_half_done(
        tmp_path: Path) -> None:
    BusinessStore.open(tmp_path / "business.db").close()
    ledger = ActionLedger(tmp_path / "business.db")

    def settle(action: str, target: str) -> tuple[str, str]:
        d = ApprovalDecision(approval_id=f"{action}-{target}", request_id="r", source_id="s",
                             action=ActionSpec(action=action, target=target, risk="high"),
                             decision="approved", decided_by="alice", via="person",
                             decided_at=now())
        out = ledger.settle(d)
        return out.outcome, out.detail

    assert settle("refund", "C-19") == ("failed",
                                        "no invoice of C-19 has a duplicate payment to refund")
    assert settle("restart_service", "nope")[0] == "failed"
    assert settle("launch_rocket", "moon")[0] == "failed"
    assert settle("rollback_deploy", "checkout-api") == (
        "succeeded", "rolled back checkout-api D-5160 (v2.14.0) to v2.13.2")
    assert settle("rollback_deploy", "checkout-api") == (  # one action id: the same outcome
        "succeeded", "rolled back checkout-api D-5160 (v2.14.0) to v2.13.2")
    assert settle("unlock_account", "C-42") == ("succeeded",
                                                "account C-42 unlocked (was locked)")
    assert ledger.outcomes()["restart_service-nope"][0] == "failed"


def test_envelope_of_a_persons_decision_names_its_request(tmp_path: Path) -> None:
    bus = MemoryBus()
    item = _waiting()
    decision = make_decision(item, "approve", "alice", "", PERSON)
    import asyncio

    event_id = asyncio.run(send_decision(_BusSender(bus), item, decision, source="/tests"))
    (record,) = bus.records(APPROVALS_DECIDED.name)
    env = Envelope.from_headers(record.headers)
    assert env is not None and env.id == event_id and env.request_id == "req-9"
    assert record.key == b"req-9"


def test_approval_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from counterpoint.infra.settings import Settings

    monkeypatch.setenv("COUNTERPOINT_ACTION_RISK", '{"restart_service": "high"}')
    monkeypatch.setenv("COUNTERPOINT_APPROVAL_THRESHOLD", "medium")
    monkeypatch.setenv("COUNTERPOINT_APPROVAL_TTL_S", "90")
    policy = Settings().approval_policy()
    assert policy.risk_of("restart_service") == "high" and policy.risk_of("refund") == "high"
    assert policy.risk_of("unlock_account") == "medium" and policy.threshold == "medium"
    assert policy.ttl == timedelta(seconds=90)
    monkeypatch.setenv("COUNTERPOINT_ACTION_RISK", '{"refund": "urgent"}')
    with pytest.raises(ValidationError, match="refund='urgent'"):
        Settings()
    monkeypatch.setenv("COUNTERPOINT_ACTION_RISK", "")
    monkeypatch.setenv("COUNTERPOINT_APPROVAL_THRESHOLD", "sometimes")
    with pytest.raises(ValidationError, match="approval_threshold"):
        Settings()
