"""The approval desk: watches pending approvals and expires the ones nobody decides in time.

Consumes: approvals.requested (ApprovalRequested) — an action waiting for a person
          approvals.decided (ApprovalDecision) — a person's (or the policy's) decision
Emits:    approvals.decided (ApprovalDecision) — `expired`, once an approval's time is up
          approvals.escalated (ApprovalEscalated) — the same moment: someone should look

Nobody blocks while a person decides: a pending approval is a *held* record (its offset stays
uncommitted) plus an absolute expiry time. A decision releases the hold; the periodic check
publishes `expired` and the escalation, then releases it. If this process dies, the held
requests are redelivered to the partitions' next owner, which rebuilds the pending set from
them (and from the decisions after them), and the expiry still fires on time. Both topics are
keyed by request id with equal partition counts and the desk uses the range assignor, so one
request's approvals and decisions meet in one process, in log order.

A decision can be read before its request (the two topics are read independently); it is held
until its request arrives, so a restart replays both, or until ORPHAN_GRACE passes (a decision
for an approval that never existed). Decisions by policy have no request and are ignored.

Only signed events count (agents/approval_checks.py): a request synthesis did not sign, or a
decision that fails the executor's checks, is dead-lettered with the reason, so a forgery can
neither start an expiry clock nor stop one. The desk signs its expiries (kind `expiry`) with
its own key, carrying the signed request they expire.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from counterpoint.agents import metrics
from counterpoint.agents.approval_checks import check_decision, check_request
from counterpoint.agents.context import AgentContext
from counterpoint.bus.agent import Agent, Cause, Emit, Hold, Incoming, Publisher
from counterpoint.schemas.approvals import ApprovalDecision, ApprovalEscalated, ApprovalRequested
from counterpoint.schemas.envelope import now
from counterpoint.topics.registry import (
    APPROVALS_DECIDED,
    APPROVALS_ESCALATED,
    APPROVALS_REQUESTED,
    Topic,
)

CONSUMES: tuple[Topic[Any], ...] = (APPROVALS_REQUESTED, APPROVALS_DECIDED)
EMITS: tuple[Topic[Any], ...] = (APPROVALS_DECIDED, APPROVALS_ESCALATED)

DESK: Final = "approvals desk"
ORPHAN_GRACE: Final = timedelta(minutes=5)
DONE_MEMORY: Final = 50_000  # decided approval ids remembered to ignore late duplicates

log = logging.getLogger(__name__)


@dataclass
class Waiting:
    request: ApprovalRequested
    cause: Cause
    partition: int
    holds: list[Hold] = field(default_factory=list)
    expiring: bool = False


@dataclass
class Orphan:
    partition: int
    since: datetime
    holds: list[Hold] = field(default_factory=list)


class Desk:
    """The pending approvals of the partitions this process owns."""

    def __init__(self) -> None:
        self.waiting: dict[str, Waiting] = {}
        self.orphans: dict[str, Orphan] = {}
        self.decided: dict[str, None] = {}  # insertion-ordered set, oldest evicted first

    def __len__(self) -> int:
        """Approvals waiting for a person (what the metrics report)."""
        return len(self.waiting)

    def decide(self, approval_id: str) -> list[Hold]:
        """Mark decided; the holds that waited for it."""
        self.decided[approval_id] = None
        while len(self.decided) > DONE_MEMORY:
            self.decided.pop(next(iter(self.decided)))
        holds = []
        if (w := self.waiting.pop(approval_id, None)) is not None:
            holds += w.holds
        if (o := self.orphans.pop(approval_id, None)) is not None:
            holds += o.holds
        return holds

    def due(self, at: datetime) -> list[Waiting]:
        return [w for w in self.waiting.values()
                if w.request.expires_at <= at and not w.expiring]

    def stale_orphans(self, at: datetime) -> list[Hold]:
        holds: list[Hold] = []
        for aid, orphan in list(self.orphans.items()):
            if at - orphan.since >= ORPHAN_GRACE:
                log.warning("decision for unknown approval %s: no request arrived within %s",
                            aid, ORPHAN_GRACE)
                holds += self.orphans.pop(aid).holds
        return holds

    def drop(self, lost: set[tuple[str, int]]) -> None:
        """Forget what lost partitions held: their next owner rebuilds it from redelivery."""
        def gone(partition: int) -> bool:
            return any((topic.name, partition) in lost for topic in CONSUMES)

        self.waiting = {a: w for a, w in self.waiting.items() if not gone(w.partition)}
        self.orphans = {a: o for a, o in self.orphans.items() if not gone(o.partition)}


def build(ctx: AgentContext) -> Agent:
    agent = Agent("approvals", emits=EMITS, joins=CONSUMES)
    desk = Desk()
    metrics.watch_waiting(agent.name, desk)
    signer = ctx.keys.signer("approvals")  # fails at start-up when this process has no key

    @agent.handles(APPROVALS_REQUESTED)
    async def on_request(event: Incoming[ApprovalRequested]) -> list[Emit]:
        check_request(ctx.keys.trust, event.data)  # Refused -> dead letter
        aid = event.data.approval_id
        if aid in desk.orphans:  # its decision came first: both are done
            event.release_after_ack(desk.decide(aid))
            return []
        if aid in desk.decided:
            return []
        waiting = desk.waiting.get(aid)
        if waiting is None:  # the first copy wins; a recomposed copy keeps the first's expiry
            waiting = desk.waiting[aid] = Waiting(event.data, event.cause(), event.partition)
        waiting.holds.append(event.hold())
        return []

    @agent.handles(APPROVALS_DECIDED)
    async def on_decision(event: Incoming[ApprovalDecision]) -> list[Emit]:
        d = event.data
        check_decision(ctx.keys.trust, ctx.approvals, d)
        if d.via == "policy" or d.approval_id in desk.decided:
            return []  # nothing waits for these; the first decision already settled it
        if d.approval_id in desk.waiting:
            metrics.approvals_decided.add(1, {metrics.AGENT_ATTR: agent.name,
                                              "counterpoint.approval.decision": d.decision,
                                              "counterpoint.approval.via": d.via})
            event.release_after_ack(desk.decide(d.approval_id))
            return []
        orphan = desk.orphans.setdefault(d.approval_id, Orphan(event.partition, now()))
        orphan.holds.append(event.hold())
        return []

    @agent.every(1.0)
    async def expire(publisher: Publisher) -> None:
        at = now()
        for hold in desk.stale_orphans(at):
            hold.release()
        for waiting in desk.due(at):
            r = waiting.request
            waited = r.expires_at - r.requested_at
            log.info("approval %s (%s on %s) expired undecided after %s", r.approval_id,
                     r.action.action, r.action.target, waited)
            decision = signer.seal("expiry", ApprovalDecision(
                approval_id=r.approval_id, request_id=r.request_id, source_id=r.source_id,
                action=r.action, decision="expired", decided_by=DESK, via="expiry",
                reason=f"nobody decided within {_span(waited)}", decided_at=at, proposal=r))
            escalation = ApprovalEscalated(
                approval_id=r.approval_id, request_id=r.request_id, source_id=r.source_id,
                action=r.action, requested_at=r.requested_at, expired_at=at,
                text=f"ESCALATED: {r.action.action} on {r.action.target} ({r.action.risk} "
                f"risk) for {r.source_id} waited {_span(waited)} for approval and expired; "
                "it was NOT executed. Decide again by hand: the proposal stays in the "
                "request's record.")
            emits = [Emit(APPROVALS_DECIDED, decision, key=r.request_id, tag="expired",
                          subject=r.source_id),
                     Emit(APPROVALS_ESCALATED, escalation, key=r.request_id, tag="escalated",
                          subject=r.source_id)]
            waiting.expiring = True
            try:
                # Ids derive from the request event's: a replay after a crash re-emits the same.
                await publisher.emit(emits, waiting.cause, release=list(waiting.holds))
            except Exception:
                waiting.expiring = False  # tried again at the next tick
                raise
            desk.decide(r.approval_id)
            metrics.approvals_expired.add(1, {metrics.AGENT_ATTR: agent.name})

    agent.on_revoked(desk.drop)
    return agent


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
