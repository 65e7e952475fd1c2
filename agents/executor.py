"""Executor: the only agent with side effects. Runs approved actions against the business systems.

Consumes: approvals.decided (ApprovalDecision) — by a person, by policy (low risk), or expiry
Emits:    actions.executed (ActionExecuted) — succeeded / failed, or skipped for an action
          whose first decision was denied or expired (it never runs)

Nothing runs on a decision that merely arrived: each is checked first (agents/approval_checks.py:
signed by a key this process trusts for its kind, carrying the signed proposal it decides and
matching it, a verdict its kind may give). A decision that fails a check is dead-lettered with
the check's reason (`unsigned`, `untrusted-key`, `unproposed`, `mismatch`, `policy-violation`,
`expiry-must-deny`, ...), records nothing and runs nothing. The proposal travels inside the
decision, so no join with approvals.requested is needed: there is nothing to wait for and no
state to lose, whatever the number of executor processes.

A checked decision is settled by `ActionLedger.settle` in one database transaction: the first
decision recorded for an action id wins, and the action's outcome is recorded with its effect,
so an action id has one effect however often its approval is delivered or published. The
outcome event's id derives from the action id, so every copy of it has the same id.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from counterpoint.agents.approval_checks import check_decision
from counterpoint.agents.context import AgentContext
from counterpoint.agents.tools.actions import ActionLedger
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.schemas.approvals import ApprovalDecision
from counterpoint.topics.registry import ACTIONS_EXECUTED, APPROVALS_DECIDED, Topic

EMITS: tuple[Topic[Any], ...] = (ACTIONS_EXECUTED,)


def build(ctx: AgentContext) -> Agent:
    agent = Agent("executor", emits=EMITS)
    ledger = ActionLedger(ctx.store_path, executed_by=f"executor pid {os.getpid()}")

    @agent.handles(APPROVALS_DECIDED)
    async def on_decision(event: Incoming[ApprovalDecision]) -> list[Emit]:
        d = event.data
        check_decision(ctx.keys.trust, ctx.approvals, d)  # Refused -> dead letter, nothing runs
        executed = await asyncio.to_thread(ledger.settle, d)
        return [Emit(ACTIONS_EXECUTED, executed, key=d.request_id, tag="executed",
                     derive_from=d.approval_id, subject=d.source_id)]

    return agent
