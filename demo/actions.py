"""The demo business's actions: side-effecting `@tool` functions, one per action kind.

Counterpoint never hands these to a model; its executor calls them after an approval, with the
action's id as `idempotency_key`. Each action and its effect are recorded under that key in one
transaction, so a repeated call — an approval redelivered, an executor restarted between the
call and recording its outcome — gets the recorded result back and changes nothing again.

    refund               customer id or invoice id: refund the later of two succeeded payments
                         of one invoice (the duplicate charge)
    unlock_account       customer id: a locked account becomes active
    send_password_reset  customer id: a reset link is recorded as sent
    rollback_deploy      service: its latest deploy not yet rolled back is rolled back to the one
                         before it
    restart_service      service: a restart is recorded

An action that cannot do its job (nothing to refund, unknown service) answers `failed` with why;
that is an outcome, recorded like a success, not an error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from counterpoint.agents.tools.define import Injected, tool
from counterpoint_demo.seed import ts
from counterpoint_demo.store import BusinessStore

Target = Annotated[str, Field(min_length=1, max_length=128,
                              description="what the action is for: a customer, invoice or "
                                          "service")]
Key = Annotated[str, Field(min_length=1, max_length=200,
                           description="the action's id: a repeat with it does nothing again")]
Store = Annotated[BusinessStore, Injected()]


class ActionResult(BaseModel):
    outcome: Literal["succeeded", "failed"]
    detail: str
    repeated: bool = False  # this key had run before: the recorded result, nothing done now


class _Failure(Exception):
    """The action could not do its job; the message says why."""


Effect = Callable[[sqlite3.Connection, str, str, str], str]  # (db, key, target, at) -> detail


def _once(store: BusinessStore, key: str, name: str, target: str, effect: Effect
          ) -> ActionResult:
    with store.transaction() as db:
        done = db.execute("SELECT outcome, detail FROM action_effects WHERE idempotency_key = ?",
                          (key,)).fetchone()
        if done is not None:
            return ActionResult(outcome=done[0], detail=done[1], repeated=True)
        at = ts(datetime.now(UTC))
        db.execute("SAVEPOINT effect")
        try:
            outcome, detail = "succeeded", effect(db, key, target, at)
        except _Failure as exc:
            db.execute("ROLLBACK TO effect")  # a half-done action leaves nothing behind
            outcome, detail = "failed", str(exc)
        db.execute("RELEASE effect")
        db.execute("INSERT INTO action_effects VALUES (?, ?, ?, ?, ?, ?)",
                   (key, name, target, outcome, detail, at))
        return ActionResult(outcome=outcome, detail=detail)


def _refund(db: sqlite3.Connection, key: str, target: str, at: str) -> str:
    if target.startswith("INV-"):
        invoices = db.execute("SELECT id FROM invoices WHERE id = ?", (target,)).fetchall()
        if not invoices:
            raise _Failure(f"no invoice {target}")
    else:
        invoices = db.execute("SELECT id FROM invoices WHERE customer_id = ? ORDER BY issued_on "
                              "DESC", (target,)).fetchall()
        if not invoices:
            raise _Failure(f"no invoices for customer {target}")
    for (invoice_id,) in invoices:
        paid = db.execute(
            "SELECT p.id, p.amount_cents, p.currency FROM payments p JOIN invoices i "
            "ON i.id = p.invoice_id WHERE p.invoice_id = ? AND p.status = 'succeeded' "
            "AND p.amount_cents = i.amount_cents ORDER BY p.charged_at", (invoice_id,)).fetchall()
        if len(paid) > 1:
            payment_id, cents, currency = paid[-1]
            db.execute("UPDATE payments SET status = 'refunded' WHERE id = ?", (payment_id,))
            db.execute("INSERT INTO refunds VALUES (?, ?, ?, ?, ?, ?)",
                       (key, payment_id, invoice_id, cents, currency, at))
            return (f"refunded {payment_id} ({cents / 100:,.2f} {currency}), the duplicate "
                    f"charge of {invoice_id}")
    raise _Failure(f"no invoice of {target} has a duplicate payment to refund")


def _unlock(db: sqlite3.Connection, key: str, target: str, at: str) -> str:
    row = db.execute("SELECT status FROM accounts WHERE customer_id = ?", (target,)).fetchone()
    if row is None:
        raise _Failure(f"no account for customer {target}")
    if row[0] != "locked":
        return f"account {target} was already {row[0]}; nothing to unlock"
    db.execute("UPDATE accounts SET status = 'active', locked_at = NULL, lock_reason = NULL "
               "WHERE customer_id = ?", (target,))
    return f"account {target} unlocked (was locked)"


def _reset(db: sqlite3.Connection, key: str, target: str, at: str) -> str:
    if db.execute("SELECT 1 FROM accounts WHERE customer_id = ?", (target,)).fetchone() is None:
        raise _Failure(f"no account for customer {target}")
    db.execute("INSERT INTO password_reset_links VALUES (?, ?, ?)", (key, target, at))
    return f"password reset link sent to customer {target}"


def _rollback(db: sqlite3.Connection, key: str, target: str, at: str) -> str:
    deploys = db.execute(
        "SELECT id, version FROM deploys WHERE service = ? AND id NOT IN "
        "(SELECT deploy_id FROM deploy_rollbacks) ORDER BY deployed_at DESC LIMIT 2",
        (target,)).fetchall()
    if not deploys:
        raise _Failure(f"no deploys of service {target!r}")
    if len(deploys) < 2:
        raise _Failure(f"{target}: no earlier deploy to roll back to")
    (deploy_id, version), (_, previous) = deploys
    db.execute("INSERT INTO deploy_rollbacks VALUES (?, ?, ?, ?, ?, ?)",
               (key, target, deploy_id, version, previous, at))
    return f"rolled back {target} {deploy_id} ({version}) to {previous}"


def _restart(db: sqlite3.Connection, key: str, target: str, at: str) -> str:
    if db.execute("SELECT 1 FROM services WHERE name = ?", (target,)).fetchone() is None:
        raise _Failure(f"no service {target!r}")
    db.execute("INSERT INTO service_restarts VALUES (?, ?, ?)", (key, target, at))
    return f"restarted {target}"


@tool(side_effects=True)
def refund(target: Target, idempotency_key: Key, *, store: Store) -> ActionResult:
    """Refund the duplicate charge of a customer's (or one invoice's) invoice."""
    return _once(store, idempotency_key, "refund", target, _refund)


@tool(side_effects=True)
def unlock_account(target: Target, idempotency_key: Key, *, store: Store) -> ActionResult:
    """Unlock a customer's locked login account."""
    return _once(store, idempotency_key, "unlock_account", target, _unlock)


@tool(side_effects=True)
def send_password_reset(target: Target, idempotency_key: Key, *, store: Store) -> ActionResult:
    """Send a customer a password reset link."""
    return _once(store, idempotency_key, "send_password_reset", target, _reset)


@tool(side_effects=True)
def rollback_deploy(target: Target, idempotency_key: Key, *, store: Store) -> ActionResult:
    """Roll a service back to the deploy before its latest."""
    return _once(store, idempotency_key, "rollback_deploy", target, _rollback)


@tool(side_effects=True)
def restart_service(target: Target, idempotency_key: Key, *, store: Store) -> ActionResult:
    """Restart a service."""
    return _once(store, idempotency_key, "restart_service", target, _restart)
