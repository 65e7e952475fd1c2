"""The only code that changes the business systems: one typed tool per action kind.

Every decision the executor sees is settled in one SQLite transaction on the business database:
the decision is recorded (the first one recorded for an action id wins), and, when the action
has no outcome yet, the winning decision's outcome is recorded in `executed_actions` together
with the tool's effect. An action id therefore has at most one effect however often its
decision is delivered or repeated, in however many executor processes; a later delivery gets
the recorded outcome back.

Tools (the target is what synthesis proposed the action for):

    refund / refund_invoice   customer id or invoice id: refund the later of two succeeded
                              payments of one invoice (the duplicate charge)
    unlock_account            customer id: a locked account becomes active
    send_password_reset       customer id: a reset link is recorded as sent
    rollback_deploy           service: its latest deploy not yet rolled back is rolled back
                              to the deploy before it
    restart_service           service: a restart is recorded

A tool that cannot do its job (nothing to refund, unknown service) records `failed` with why;
that is an outcome, not an error, and is not retried.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from counterpoint.bus.errors import TransientError
from counterpoint.schemas.approvals import ActionExecuted, ApprovalDecision, Outcome

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS action_decisions (
    approval_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, decision TEXT NOT NULL,
    decided_by TEXT NOT NULL, via TEXT NOT NULL, reason TEXT NOT NULL, decided_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS executed_actions (
    action_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL, decided_by TEXT NOT NULL,
    executed_at TEXT NOT NULL, executed_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (
    action_id TEXT PRIMARY KEY, payment_id TEXT NOT NULL, invoice_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL, currency TEXT NOT NULL, refunded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deploy_rollbacks (
    action_id TEXT PRIMARY KEY, service TEXT NOT NULL, deploy_id TEXT NOT NULL,
    from_version TEXT NOT NULL, to_version TEXT NOT NULL, rolled_back_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS service_restarts (
    action_id TEXT PRIMARY KEY, service TEXT NOT NULL, restarted_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS password_reset_links (
    action_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, sent_at TEXT NOT NULL);
"""


class ToolFailure(Exception):
    """The tool could not do its job; the message says why (recorded as outcome `failed`)."""


Tool = Callable[[sqlite3.Connection, str, str, str], str]  # (db, action id, target, at) -> detail


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def refund_duplicate_payment(db: sqlite3.Connection, aid: str, target: str, at: str) -> str:
    if target.startswith("INV-"):
        invoices = db.execute("SELECT id FROM invoices WHERE id = ?", (target,)).fetchall()
        if not invoices:
            raise ToolFailure(f"no invoice {target}")
    else:
        invoices = db.execute("SELECT id FROM invoices WHERE customer_id = ? ORDER BY issued_on "
                              "DESC", (target,)).fetchall()
        if not invoices:
            raise ToolFailure(f"no invoices for customer {target}")
    for (invoice_id,) in invoices:
        paid = db.execute(
            "SELECT p.id, p.amount_cents, p.currency FROM payments p JOIN invoices i "
            "ON i.id = p.invoice_id WHERE p.invoice_id = ? AND p.status = 'succeeded' "
            "AND p.amount_cents = i.amount_cents ORDER BY p.charged_at", (invoice_id,)).fetchall()
        if len(paid) > 1:
            payment_id, cents, currency = paid[-1]
            db.execute("UPDATE payments SET status = 'refunded' WHERE id = ?", (payment_id,))
            db.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?)",
                       (aid, payment_id, invoice_id, cents, currency, at))
            return (f"refunded {payment_id} ({cents / 100:,.2f} {currency}), the duplicate "
                    f"charge of {invoice_id}")
    raise ToolFailure(f"no invoice of {target} has a duplicate payment to refund")


def unlock_account(db: sqlite3.Connection, aid: str, target: str, at: str) -> str:
    row = db.execute("SELECT status FROM accounts WHERE customer_id = ?", (target,)).fetchone()
    if row is None:
        raise ToolFailure(f"no account for customer {target}")
    if row[0] != "locked":
        return f"account {target} was already {row[0]}; nothing to unlock"
    db.execute("UPDATE accounts SET status = 'active', locked_at = NULL, lock_reason = NULL "
               "WHERE customer_id = ?", (target,))
    return f"account {target} unlocked (was locked)"


def send_password_reset(db: sqlite3.Connection, aid: str, target: str, at: str) -> str:
    if db.execute("SELECT 1 FROM accounts WHERE customer_id = ?", (target,)).fetchone() is None:
        raise ToolFailure(f"no account for customer {target}")
    db.execute("INSERT INTO password_reset_links VALUES (?, ?, ?)", (aid, target, at))
    return f"password reset link sent to customer {target}"


def rollback_deploy(db: sqlite3.Connection, aid: str, target: str, at: str) -> str:
    deploys = db.execute(
        "SELECT id, version FROM deploys WHERE service = ? AND id NOT IN "
        "(SELECT deploy_id FROM deploy_rollbacks) ORDER BY deployed_at DESC LIMIT 2",
        (target,)).fetchall()
    if not deploys:
        raise ToolFailure(f"no deploys of service {target!r}")
    if len(deploys) < 2:
        raise ToolFailure(f"{target}: no earlier deploy to roll back to")
    (deploy_id, version), (_, previous) = deploys
    db.execute("INSERT INTO deploy_rollbacks VALUES (?, ?, ?, ?, ?, ?)",
               (aid, target, deploy_id, version, previous, at))
    return f"rolled back {target} {deploy_id} ({version}) to {previous}"


def restart_service(db: sqlite3.Connection, aid: str, target: str, at: str) -> str:
    if db.execute("SELECT 1 FROM services WHERE name = ?", (target,)).fetchone() is None:
        raise ToolFailure(f"no service {target!r}")
    db.execute("INSERT INTO service_restarts VALUES (?, ?, ?)", (aid, target, at))
    return f"restarted {target}"


TOOLS: Final[dict[str, Tool]] = {
    "refund": refund_duplicate_payment,
    "refund_invoice": refund_duplicate_payment,
    "unlock_account": unlock_account,
    "send_password_reset": send_password_reset,
    "rollback_deploy": rollback_deploy,
    "restart_service": restart_service,
}


@dataclass(frozen=True)
class _Recorded:
    decision: str
    decided_by: str
    reason: str


class ActionLedger:
    """Read-write access to the business database for the executor alone."""

    def __init__(self, path: Path, executed_by: str = "executor") -> None:
        self.path = path
        self.executed_by = executed_by
        self._lock = threading.Lock()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        # A connection per use, never kept: agents starting together may each publish the
        # seeded database (BusinessStore.open replaces the file), and a kept connection would
        # go on writing to the replaced file. Autocommit mode: transactions are opened with
        # BEGIN IMMEDIATE, so two executors settling one action serialise instead of both
        # reading "not run yet".
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with self._connection() as db:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        yield db
                        db.execute("COMMIT")
                    except BaseException:
                        if db.in_transaction:
                            db.execute("ROLLBACK")
                        raise
            except sqlite3.OperationalError as exc:  # locked for longer than the timeout
                raise TransientError(f"business database busy: {exc}") from exc

    def settle(self, d: ApprovalDecision) -> ActionExecuted:
        """Record `d` (first decision wins) and the action's one outcome; return that outcome."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO action_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (d.approval_id, d.request_id, d.decision, d.decided_by, d.via, d.reason,
                        _ts(d.decided_at)))
            done = db.execute("SELECT outcome, detail, decided_by, executed_at, executed_by "
                              "FROM executed_actions WHERE action_id = ?",
                              (d.approval_id,)).fetchone()
            if done is not None:
                outcome, detail, decided_by, executed_at, executed_by = done
                return self._event(d, outcome, detail, decided_by,
                                   datetime.fromisoformat(executed_at), executed_by)
            first = _Recorded(*db.execute(
                "SELECT decision, decided_by, reason FROM action_decisions "
                "WHERE approval_id = ?", (d.approval_id,)).fetchone())
            at = datetime.now(UTC).replace(microsecond=0)
            outcome, detail = self._run(db, d, first, _ts(at))
            db.execute("INSERT INTO executed_actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (d.approval_id, d.request_id, d.action.action, d.action.target, outcome,
                        detail, first.decided_by, _ts(at), self.executed_by))
            return self._event(d, outcome, detail, first.decided_by, at, self.executed_by)

    def _run(self, db: sqlite3.Connection, d: ApprovalDecision, first: _Recorded,
             at: str) -> tuple[Outcome, str]:
        if first.decision != "approved":
            why = f": {first.reason}" if first.reason else ""
            return "skipped", f"not run: {first.decision} by {first.decided_by}{why}"
        tool = TOOLS.get(d.action.action)
        if tool is None:
            return "failed", (f"no tool runs action kind {d.action.action!r} (known: "
                              f"{', '.join(sorted(TOOLS))})")
        db.execute("SAVEPOINT tool")
        try:
            detail = tool(db, d.approval_id, d.action.target, at)
        except ToolFailure as exc:
            db.execute("ROLLBACK TO tool")  # a half-done tool leaves nothing behind
            return "failed", str(exc)
        finally:
            db.execute("RELEASE tool")
        return "succeeded", detail

    def _event(self, d: ApprovalDecision, outcome: str, detail: str, decided_by: str,
               at: datetime, executed_by: str) -> ActionExecuted:
        return ActionExecuted.model_validate({
            "action_id": d.approval_id, "request_id": d.request_id, "source_id": d.source_id,
            "action": d.action, "outcome": outcome, "detail": detail, "decided_by": decided_by,
            "executed_at": at, "executed_by": executed_by})

    def outcomes(self) -> dict[str, tuple[str, str]]:
        """action id -> (outcome, detail): what has run, for tests and inspection."""
        with self._lock, self._connection() as db:
            rows = db.execute("SELECT action_id, outcome, detail FROM executed_actions")
            return {aid: (outcome, detail) for aid, outcome, detail in rows.fetchall()}
