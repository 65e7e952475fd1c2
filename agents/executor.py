"""Executor: the only agent with side effects. Runs approved actions as tools of a business system.

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

A checked decision is recorded in the executor's ledger (agents/tools/actions.py,
`$COUNTERPOINT_HOME/actions.db`; the first decision recorded for an action id wins). If the
action has an outcome already, that outcome is published again and nothing is called. Otherwise
an approved action runs as the side-effecting tool of its kind on the executor's allowlist
(`business.refund` for `refund` with the built-in configuration; any `SOURCE.<kind>` a project
file lists), with `{"target": ..., "idempotency_key": <approval id>}`: the business system does
a repeated key's work once, so a call repeated after a crash, or by two executors at once, has
one effect. Its outcome is recorded and published. A tool that cannot be reached or is too slow
is retried by the bus and then dead-lettered (`tool-unavailable`, `tool-timeout`) with nothing
recorded, so a later redelivery can still run it; a tool that refuses or fails the action, or
an action no allowlisted tool runs, is a `failed` outcome. The outcome event's id derives from
the action id, so every copy of it has the same id.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from counterpoint.agents.approval_checks import check_decision
from counterpoint.agents.context import AgentContext
from counterpoint.agents.tools.actions import FILE_NAME, ActionLedger, FirstDecision
from counterpoint.agents.tools.errors import InvalidInput
from counterpoint.agents.tools.registry import Toolbox, ToolReply
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.errors import is_retriable
from counterpoint.schemas.approvals import ApprovalDecision, Outcome
from counterpoint.topics.registry import ACTIONS_EXECUTED, APPROVALS_DECIDED, Topic

EMITS: tuple[Topic[Any], ...] = (ACTIONS_EXECUTED,)
# How much of a tool's answer an outcome's detail keeps (it is published and stored).
DETAIL_CHARS = 500


class ExecutorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Path(".counterpoint")  # COUNTERPOINT_HOME: where its ledger is
    # Action kinds run by a tool of another name (a proposal's kind -> the tool's name).
    tool_for: dict[str, str] = Field(default_factory=lambda: {"refund_invoice": "refund"})


def build(ctx: AgentContext) -> Agent:
    settings = ctx.config(ExecutorSettings)
    agent = Agent(ctx.name or "executor", emits=EMITS)
    # A file at the ledger's path that Counterpoint did not make stops the build (UnrecognisedFile).
    ledger = ActionLedger(settings.home / FILE_NAME, executed_by=f"executor pid {os.getpid()}")

    @agent.handles(APPROVALS_DECIDED)
    async def on_decision(event: Incoming[ApprovalDecision]) -> list[Emit]:
        d = event.data
        check_decision(ctx.keys.trust, ctx.approvals, d)  # Refused -> dead letter, nothing runs
        first, done = await asyncio.to_thread(ledger.decide, d)
        if done is None:
            outcome, detail = await _run(ctx.tools, agent.name, settings, d, first)
            done = await asyncio.to_thread(ledger.record, d, outcome, detail, first.decided_by)
        return [Emit(ACTIONS_EXECUTED, done, key=d.request_id, tag="executed",
                     derive_from=d.approval_id, subject=d.source_id)]

    return agent


async def _run(tools: Toolbox, agent: str, settings: ExecutorSettings, d: ApprovalDecision,
               first: FirstDecision) -> tuple[Outcome, str]:
    if first.decision != "approved":
        why = f": {first.reason}" if first.reason else ""
        return "skipped", f"not run: {first.decision} by {first.decided_by}{why}"
    name = settings.tool_for.get(d.action.action, d.action.action)
    entries = [e for e in tools.allowlist(agent) if e.partition(".")[2] == name]
    if not entries:
        return "failed", (f"no tool on the {agent} allowlist runs action kind "
                          f"{d.action.action!r} (it has: "
                          f"{', '.join(tools.allowlist(agent)) or 'none'})")
    try:
        reply = await tools.action(entries[0], {"target": d.action.target,
                                                "idempotency_key": d.approval_id},
                                   agent=agent, request_id=d.request_id)
    except InvalidInput as exc:
        return "failed", f"{entries[0]} does not take this action: {exc}"
    except Exception as exc:
        if is_retriable(exc):
            raise  # unreachable or too slow: the bus retries, then dead-letters
        return "failed", f"{entries[0]} failed ({type(exc).__name__})"
    return _outcome(entries[0], reply)


def _outcome(entry: str, reply: ToolReply) -> tuple[Outcome, str]:
    """A tool's answer as an outcome: an error reply or `{"outcome": "failed"}` is `failed`;
    `detail` (or the answer's text) says what happened."""
    data = reply.data if isinstance(reply.data, dict) else {}
    detail = str(data.get("detail") or reply.text).strip()[:DETAIL_CHARS]
    if reply.is_error:
        return "failed", f"{entry} reported an error: {detail}"
    return ("failed" if data.get("outcome") == "failed" else "succeeded"), detail
