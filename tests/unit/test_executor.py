"""The executor's actions through the tool layer: an approved action is its kind's
side-effecting tool on the executor's allowlist, called with the approval id as the
idempotency key; the ledger (its own actions.db) records the outcome, so a repeated decision
gets it back without a second call. Transient tool failures are retried, then dead-lettered;
permanent ones are failed outcomes. The tools here are a real `@tool` action source."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest

from counterpoint.agents.context import AgentContext
from counterpoint.agents.executor import build
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.signing import Keyring
from counterpoint.agents.sqlite_files import UnrecognisedFile
from counterpoint.agents.tools.actions import FILE_NAME, ActionLedger
from counterpoint.agents.tools.define import Injected, tool
from counterpoint.agents.tools.errors import ToolUnavailable
from counterpoint.agents.tools.registry import Toolbox, python_tools
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.delivery import RetryPolicy
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.approvals import (
    ActionExecuted,
    ActionSpec,
    ApprovalDecision,
    ApprovalRequested,
    action_id,
)
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.topics.registry import ACTIONS_EXECUTED, APPROVALS_DECIDED, DEADLETTER_NAME
from counterpoint_demo.store import BusinessStore
from tests.support.demo_business import demo_context
from tests.support.forgeries import decision

KEYS = Keyring.ephemeral()
RETRY = RetryPolicy(max_attempts=2, max_seconds=5, base_delay_s=0.01, max_delay_s=0.01)


@dataclass
class Shop:
    """What the shop's action tools were asked to do, and whether its server is down."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)
    down: bool = False


ShopState = Annotated[Shop, Injected("shop")]


@tool(side_effects=True)
def refund(target: str, idempotency_key: str, *, shop: ShopState) -> dict[str, Any]:
    """Refund a customer's duplicate charge."""
    if shop.down:
        raise ToolUnavailable("the shop's server does not answer")
    shop.calls.append(("refund", target, idempotency_key))
    return {"outcome": "succeeded", "detail": f"refunded {target}"}


@tool(side_effects=True)
def unlock_account(target: str, idempotency_key: str, *, shop: ShopState) -> dict[str, Any]:
    """Unlock a customer's account."""
    shop.calls.append(("unlock_account", target, idempotency_key))
    return {"outcome": "failed", "detail": f"no account for customer {target}"}


@tool(side_effects=True)
def restart_service(target: str, idempotency_key: str, *, shop: ShopState) -> str:
    """Restart a service."""
    raise RuntimeError("the restart API rejected the call")


def signed(action: str = "refund", target: str = "C-42", verdict: str = "approved",
           request_id: str = "req-1") -> ApprovalDecision:
    spec = ActionSpec(action=action, target=target, risk="high")
    proposal = KEYS.signer("synthesis").seal("proposal", ApprovalRequested(
        approval_id=action_id(request_id, action, target), request_id=request_id,
        source_id="T-1", action=spec, reason="test", requested_at=now(),
        expires_at=now() + timedelta(hours=1)))
    reason = "identity not verified" if verdict == "denied" else ""
    return KEYS.signer("cli").seal("person", decision(proposal, decision=verdict,
                                                      reason=reason))


def executor(tmp_path: Path, shop: Shop) -> tuple[MemoryBus, AgentContext]:
    box = Toolbox(python_tools("shop", [refund, unlock_account, restart_service],
                               {"shop": shop}),
                  {"executor": ["shop.refund", "shop.unlock_account", "shop.restart_service"]})
    ctx = AgentContext(provider=OfflineProvider(), name="executor", keys=KEYS, tools=box,
                       defaults={"home": tmp_path})
    bus = MemoryBus()
    bus.add(build(ctx), RETRY)
    return bus, ctx


async def publish(bus: MemoryBus, d: ApprovalDecision) -> None:
    env = Envelope(id=new_event_id(), source="/tests", type=APPROVALS_DECIDED.ce_type,
                   time=now(), request_id=d.request_id)
    await bus.publish(APPROVALS_DECIDED.name, d.model_dump_json().encode(),
                      key=d.request_id.encode(), headers=env.to_headers())
    await bus.run_until_idle()


def outcomes(bus: MemoryBus) -> list[tuple[str, ActionExecuted]]:
    return [(Envelope.from_headers(r.headers).id,  # type: ignore[union-attr]
             ACTIONS_EXECUTED.decode(r.value or b"")) for r in bus.records(ACTIONS_EXECUTED.name)]


def letters(bus: MemoryBus) -> list[DeadLetter]:
    return [DeadLetter.from_record(r) for r in bus.records(DEADLETTER_NAME)]


async def test_an_approved_action_is_its_tool_called_once_with_the_approval_id_as_key(
        tmp_path: Path) -> None:
    shop = Shop()
    bus, _ = executor(tmp_path, shop)
    d = signed()
    await publish(bus, d)
    await publish(bus, d)  # the decision again (a redelivery, or a second publisher)

    assert shop.calls == [("refund", "C-42", d.approval_id)]
    ids = {i for i, _ in outcomes(bus)}
    assert len(outcomes(bus)) == 2 and len(ids) == 1  # the same outcome event, twice
    (done,) = {o.model_dump_json() for _, o in outcomes(bus)}
    out = ActionExecuted.model_validate_json(done)
    assert (out.outcome, out.detail, out.decided_by) == ("succeeded", "refunded C-42", "alice")
    assert ActionLedger(tmp_path / FILE_NAME).outcomes() == {
        d.approval_id: ("succeeded", "refunded C-42")}
    assert letters(bus) == []


async def test_the_ledger_is_counterpoints_own_file_not_the_business_database(
        tmp_path: Path) -> None:
    bus, _ = executor(tmp_path, Shop())
    await publish(bus, signed())
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert db.execute("PRAGMA application_id").fetchone()[0] == int.from_bytes(
            b"CPNT", "big")
    assert tables == {"action_decisions", "executed_actions",
                      "sqlite_autoindex_action_decisions_1",
                      "sqlite_autoindex_executed_actions_1"}
    # Nothing else: no business database (the write-ahead log's files are the ledger's own).
    assert {p.name for p in tmp_path.iterdir()} <= {FILE_NAME, f"{FILE_NAME}-wal",
                                                    f"{FILE_NAME}-shm"}


async def test_a_transient_tool_failure_is_retried_then_dead_lettered_and_records_nothing(
        tmp_path: Path) -> None:
    shop = Shop(down=True)
    bus, _ = executor(tmp_path, shop)
    d = signed()
    await publish(bus, d)

    (letter,) = letters(bus)
    assert letter.reason == "tool-unavailable" and letter.attempts == 2, letter
    assert outcomes(bus) == [] and ActionLedger(tmp_path / FILE_NAME).outcomes() == {}
    shop.down = False  # the server is back: the decision, redriven, runs it once
    await publish(bus, d)
    assert shop.calls == [("refund", "C-42", d.approval_id)]
    assert [o.outcome for _, o in outcomes(bus)] == ["succeeded"]


@pytest.mark.parametrize(("action", "says"), [
    ("unlock_account", "no account for customer C-42"),
    ("restart_service", "shop.restart_service failed (RuntimeError)"),
    ("launch_rocket", "no tool on the executor allowlist runs action kind 'launch_rocket'"),
])
async def test_a_permanent_failure_is_a_failed_outcome_recorded_once(
        tmp_path: Path, action: str, says: str) -> None:
    shop = Shop()
    bus, _ = executor(tmp_path, shop)
    d = signed(action=action)
    await publish(bus, d)
    await publish(bus, d)

    assert letters(bus) == []
    (failed,) = {(o.outcome, o.detail) for _, o in outcomes(bus)}
    assert failed[0] == "failed" and says in failed[1], failed
    assert len(shop.calls) <= 1  # a repeated decision does not call again


async def test_a_denied_action_calls_nothing(tmp_path: Path) -> None:
    shop = Shop()
    bus, _ = executor(tmp_path, shop)
    await publish(bus, signed(verdict="denied"))
    await publish(bus, signed())  # a later approval of the same action: the first decision won
    assert shop.calls == []
    assert {o.outcome for _, o in outcomes(bus)} == {"skipped"}
    assert "denied by alice: identity not verified" in outcomes(bus)[0][1].detail


async def test_an_unsigned_decision_calls_nothing(tmp_path: Path) -> None:
    shop = Shop()
    bus, _ = executor(tmp_path, shop)
    d = signed()
    env = Envelope(id=new_event_id(), source="/mallory", type=APPROVALS_DECIDED.ce_type,
                   time=now(), request_id=d.request_id)
    forged = orjson.loads(d.model_dump_json())
    forged.pop("signature", None)
    await bus.publish(APPROVALS_DECIDED.name, orjson.dumps(forged), key=b"req-1",
                      headers=env.to_headers())
    await bus.run_until_idle()
    assert shop.calls == [] and [x.reason for x in letters(bus)] == ["unsigned"]


def test_a_file_counterpoint_did_not_create_stops_the_executor_and_is_left_alone(
        tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    before = path.read_bytes()
    with pytest.raises(UnrecognisedFile, match="without Counterpoint's mark"):
        executor(tmp_path, Shop())
    assert path.read_bytes() == before


# --- on the demo business's own actions ---------------------------------------------------


def demo_executors(store: BusinessStore, count: int) -> MemoryBus:
    """`count` executor processes, as separate consumer groups so each gets every decision
    (the worst case: nothing but the ledger and the key keeps them from acting twice)."""
    bus = MemoryBus()
    for n in range(count):
        agent = build(demo_context(store, provider=OfflineProvider(), name="executor",
                                   keys=KEYS))
        agent.group = f"executor-{n}"
        bus.add(agent, RETRY)
    return bus


async def test_several_executors_and_a_repeated_decision_refund_once(
        store: BusinessStore) -> None:
    bus = demo_executors(store, 4)
    d = signed()
    await publish(bus, d)
    await publish(bus, d)

    assert len(outcomes(bus)) == 8 and len({i for i, _ in outcomes(bus)}) == 1
    assert {(o.outcome, o.detail) for _, o in outcomes(bus)} == {
        ("succeeded", "refunded PAY-88122 (1,250.00 USD), the duplicate charge of INV-2291")}
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT idempotency_key, payment_id FROM refunds").fetchall() == [
            (d.approval_id, "PAY-88122")]
        assert db.execute("SELECT count(*) FROM payments WHERE status = 'refunded'"
                          ).fetchone() == (1,)


async def test_an_action_the_business_cannot_do_is_failed_and_changes_nothing(
        store: BusinessStore) -> None:
    bus = demo_executors(store, 1)

    async def run(action: str, target: str) -> tuple[str, str]:
        d = signed(action=action, target=target, request_id=f"r-{action}-{target}")
        await publish(bus, d)
        (out,) = [o for _, o in outcomes(bus) if o.action_id == d.approval_id]
        return out.outcome, out.detail

    assert await run("refund", "C-19") == (
        "failed", "no invoice of C-19 has a duplicate payment to refund")
    assert (await run("restart_service", "nope"))[0] == "failed"
    assert await run("rollback_deploy", "checkout-api") == (
        "succeeded", "rolled back checkout-api D-5160 (v2.14.0) to v2.13.2")
    assert await run("refund_invoice", "INV-2291") == (  # the kind runs the `refund` tool
        "succeeded", "refunded PAY-88122 (1,250.00 USD), the duplicate charge of INV-2291")
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT count(*) FROM service_restarts").fetchone() == (0,)
