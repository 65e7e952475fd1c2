"""The demo business's actions: side-effecting tools that run once per idempotency key, however
often they are called, and that no model session can be handed."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from counterpoint.agents.tools.define import tools_in
from counterpoint.agents.tools.errors import ToolConfigError
from counterpoint.agents.tools.registry import Toolbox, python_tools
from counterpoint_demo import actions
from counterpoint_demo.store import BusinessStore


def _refunds(store: BusinessStore) -> list[tuple[str, str]]:
    with sqlite3.connect(store.path) as db:
        return db.execute("SELECT idempotency_key, payment_id FROM refunds").fetchall()


def test_an_action_runs_once_per_key(store: BusinessStore) -> None:
    first = actions.refund.fn(target="C-42", idempotency_key="act-1", store=store)
    again = actions.refund.fn(target="C-42", idempotency_key="act-1", store=store)

    assert first.outcome == "succeeded" and not first.repeated
    assert "refunded PAY-88122" in first.detail
    assert (again.outcome, again.detail, again.repeated) == (first.outcome, first.detail, True)
    assert _refunds(store) == [("act-1", "PAY-88122")]
    # Another action on the same invoice finds nothing left to refund: a failed outcome.
    other = actions.refund.fn(target="INV-2291", idempotency_key="act-2", store=store)
    assert other.outcome == "failed" and "no invoice" in other.detail


async def test_concurrent_calls_with_one_key_have_one_effect(store: BusinessStore) -> None:
    box = Toolbox(python_tools("business", tools_in(actions), {"store": store}),
                  {"executor": ["business.rollback_deploy"]})
    replies = await asyncio.gather(*(box.action(
        "business.rollback_deploy", {"target": "checkout-api", "idempotency_key": "act-9"},
        agent="executor", request_id="r") for _ in range(6)))
    assert sorted(r.data["repeated"] for r in replies) == [False] + [True] * 5
    with sqlite3.connect(store.path) as db:
        assert db.execute("SELECT count(*) FROM deploy_rollbacks").fetchone() == (1,)


async def test_no_model_session_can_hold_an_action(store: BusinessStore) -> None:
    box = Toolbox(python_tools("business", tools_in(actions), {"store": store}),
                  {"billing": ["business.refund"]})
    with pytest.raises(ToolConfigError, match="side effects"):
        box.session("billing", request_id="r")
    with pytest.raises(ToolConfigError, match="not on the triage allowlist"):
        await box.action("business.refund", {"target": "C-42", "idempotency_key": "k"},
                         agent="triage", request_id="r")
