"""Executor: the only agent with side effects. Runs approved actions against the business systems.

Consumes: approvals.decided (ApprovalDecision) — by a person, by policy (low risk), or expiry
Emits:    actions.executed (ActionExecuted) — succeeded / failed, or skipped for an action
          whose first decision was denied or expired (it never runs)

Each decision is settled by `ActionLedger.settle` in one database transaction: the first
decision recorded for an action id wins, and the action's outcome is recorded with its effect,
so an action id has one effect however often its approval is delivered or published. The
outcome event's id derives from the action id, so every copy of it has the same id.

A policy approval (low risk) is checked against this process's own risk configuration: one for
an action that needs a person is dead-lettered (`policy-violation`), never run.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from counterpoint.agents.context import AgentContext
from counterpoint.agents.tools.actions import ActionLedger
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.errors import CounterpointError
from counterpoint.schemas.approvals import ApprovalDecision
from counterpoint.topics.registry import ACTIONS_EXECUTED, APPROVALS_DECIDED, Topic

CONSUMES: tuple[Topic[Any], ...] = (APPROVALS_DECIDED,)
EMITS: tuple[Topic[Any], ...] = (ACTIONS_EXECUTED,)


class PolicyViolation(CounterpointError):
    """A policy approval of an action this executor's configuration says needs a person."""

    reason = "policy-violation"


def build(ctx: AgentContext) -> Agent:
    agent = Agent("executor", emits=EMITS)
    ledger = ActionLedger(ctx.actions_db, executed_by=f"executor pid {os.getpid()}")

    @agent.handles(APPROVALS_DECIDED)
    async def on_decision(event: Incoming[ApprovalDecision]) -> list[Emit]:
        d = event.data
        risk = ctx.approvals.risk_of(d.action.action)
        if d.via == "policy" and ctx.approvals.needs_approval(risk):
            raise PolicyViolation(
                f"{d.action.action} on {d.action.target} is {risk} risk here, above the "
                f"approval threshold ({ctx.approvals.threshold}): a policy approval cannot run "
                "it; a person must approve (is the risk configuration the same everywhere?)")
        executed = await asyncio.to_thread(ledger.settle, d)
        return [Emit(ACTIONS_EXECUTED, executed, key=d.request_id, tag="executed",
                     derive_from=d.approval_id, subject=d.source_id)]

    return agent
