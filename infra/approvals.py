"""Approvals for people: what waits, deciding, and a request's record of its actions.

Everything is read from the topics themselves (group-less, so reading never takes work from an
agent): `ApprovalBook` folds approvals.requested, approvals.decided, approvals.escalated and
actions.executed into one `ActionRecord` per action. The first decision in the log for an
approval wins, for every reader alike (the executor applies the same rule).

Only what passes the agents' own checks is folded in (agents/approval_checks.py): a request
synthesis did not sign, or a forged decision, is counted in `refused` and shown nowhere, so a
forgery can neither list an action nor make it look decided.

A person's decision is an event on approvals.decided whose id derives from the approval, the
decision and the person, so the same person sending the same decision twice is one event. It
is signed (kind `person`) by the key of whoever sends it (the gateway, the CLI), under the
identity that sender authenticated, and carries the signed request it decides.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from counterpoint.agents.approval_checks import check_decision, check_request
from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.signing import Keyring, Refused, Signer, Trust
from counterpoint.bus import tracing
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, tail
from counterpoint.infra.publishing import Sender
from counterpoint.schemas.approvals import (
    ActionExecuted,
    ActionSpec,
    ApprovalDecision,
    ApprovalEscalated,
    ApprovalRequested,
)
from counterpoint.schemas.envelope import Envelope, derive_event_id, now
from counterpoint.topics.registry import (
    ACTIONS_EXECUTED,
    APPROVALS_DECIDED,
    APPROVALS_ESCALATED,
    APPROVALS_REQUESTED,
    Topic,
)

APPROVAL_TOPICS: tuple[Topic[Any], ...] = (APPROVALS_REQUESTED, APPROVALS_DECIDED,
                                           APPROVALS_ESCALATED, ACTIONS_EXECUTED)
MIN_PREFIX = 6  # shortest id prefix a person may type instead of the whole id

State = Literal["pending", "approved", "denied", "expired"]
Verdict = Literal["approve", "deny"]


class ApprovalError(LookupError):
    """An approval id that cannot be decided: unknown, ambiguous or already decided."""

    def __init__(self, message: str, kind: Literal["unknown", "decided", "invalid"]) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class ActionRecord:
    approval_id: str
    request_id: str
    source_id: str
    action: ActionSpec
    requested: ApprovalRequested | None = None
    requested_event: str | None = None
    trace_headers: tuple[tuple[str, bytes], ...] = ()
    decision: ApprovalDecision | None = None  # the first in the log: the one that counts
    decision_event: str | None = None
    ignored: list[ApprovalDecision] = field(default_factory=list)  # later decisions
    escalation: ApprovalEscalated | None = None
    executed: ActionExecuted | None = None

    @property
    def state(self) -> State:
        if self.decision is None:
            return "pending"
        return self.decision.decision

    def as_json(self) -> dict[str, Any]:
        d, x = self.decision, self.executed
        return {
            "approval_id": self.approval_id, "request_id": self.request_id,
            "source_id": self.source_id, "action": self.action.action,
            "target": self.action.target, "risk": self.action.risk, "state": self.state,
            "needs_approval": self.requested is not None,
            "requested_at": _iso(self.requested.requested_at if self.requested else None),
            "expires_at": _iso(self.requested.expires_at if self.requested else None),
            "reason": self.requested.reason if self.requested else None,
            "decision": None if d is None else {
                "decision": d.decision, "by": d.decided_by, "via": d.via, "reason": d.reason,
                "at": _iso(d.decided_at)},
            "later_decisions_ignored": len(self.ignored),
            "escalated": self.escalation.text if self.escalation else None,
            "executed": None if x is None else {
                "outcome": x.outcome, "detail": x.detail, "by": x.executed_by,
                "at": _iso(x.executed_at)},
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class ApprovalBook:
    """Every action seen on the approval topics, by approval id."""

    def __init__(self, trust: Trust, policy: ApprovalPolicy,
                 max_actions: int = 200_000) -> None:
        self.trust, self.policy = trust, policy
        self.refused = 0  # events that failed the checks: forged, or signed by a stranger
        self.actions: OrderedDict[str, ActionRecord] = OrderedDict()
        # Event ids: a redelivered copy is folded in once. Each action has a few events.
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._max = max_actions  # a long-running gateway forgets the oldest beyond this

    def apply(self, record: RawRecord) -> bool:
        """Fold one record in; False when it is not an approval event or is a copy."""
        envelope = Envelope.from_headers(record.headers)
        topic = next((t for t in APPROVAL_TOPICS if t.name == record.topic), None)
        if envelope is None or record.value is None or topic is None:
            return False
        if envelope.id in self._seen:
            return False
        self._seen[envelope.id] = None
        while len(self._seen) > 8 * self._max:
            self._seen.popitem(last=False)
        event = topic.decode(record.value)
        try:
            if isinstance(event, ApprovalRequested):
                check_request(self.trust, event)
            elif isinstance(event, ApprovalDecision):
                check_decision(self.trust, self.policy, event)
        except Refused:
            self.refused += 1
            return False
        item = self._entry(event.approval_id if not isinstance(event, ActionExecuted)
                           else event.action_id, event.request_id, event.source_id, event.action)
        if isinstance(event, ApprovalRequested):
            if item.requested is None:
                item.requested, item.requested_event = event, envelope.id
                item.trace_headers = tuple((k, v) for k, v in record.headers
                                           if k in tracing.TRACE_HEADERS)
        elif isinstance(event, ApprovalDecision):
            if item.decision is None:
                item.decision, item.decision_event = event, envelope.id
            else:
                item.ignored.append(event)
        elif isinstance(event, ApprovalEscalated):
            item.escalation = item.escalation or event
        else:
            item.executed = item.executed or event
        return True

    def _entry(self, aid: str, request_id: str, source_id: str,
               action: ActionSpec) -> ActionRecord:
        item = self.actions.get(aid)
        if item is None:
            item = self.actions[aid] = ActionRecord(aid, request_id, source_id, action)
            while len(self.actions) > self._max:
                self.actions.popitem(last=False)
        return item

    def pending(self) -> list[ActionRecord]:
        waiting = [a for a in self.actions.values()
                   if a.requested is not None and a.decision is None]
        return sorted(waiting, key=lambda a: a.requested.requested_at if a.requested else now())

    def waiting_for_people(self) -> list[ActionRecord]:
        """Every action that needed a person, decided or not, oldest first."""
        items = [a for a in self.actions.values() if a.requested is not None]
        return sorted(items, key=lambda a: a.requested.requested_at if a.requested else now())

    def for_request(self, request_id: str) -> list[ActionRecord]:
        return [a for a in self.actions.values() if a.request_id == request_id]

    def find(self, text: str) -> ActionRecord:
        """The approval `text` names: its whole id, or a unique prefix of MIN_PREFIX or more."""
        text = text.strip().lower()
        if text in self.actions:
            return self.actions[text]
        matches = [a for aid, a in self.actions.items()
                   if len(text) >= MIN_PREFIX and aid.startswith(text)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ApprovalError(f"approval id {text!r} is ambiguous: it starts "
                                f"{len(matches)} ids; type more of it", "unknown")
        hint = (f" (a prefix needs at least {MIN_PREFIX} characters)"
                if len(text) < MIN_PREFIX else "")
        raise ApprovalError(f"no approval {text!r}{hint}; `counterpoint approvals` lists "
                            "the pending ones", "unknown")


def check_decidable(item: ActionRecord) -> None:
    """ApprovalError unless `item` is an approval still waiting for a person."""
    if item.requested is None:
        raise ApprovalError(f"approval {item.approval_id} was never waiting for a person: "
                            f"{item.action.action} on {item.action.target} is "
                            f"{item.action.risk} risk and was decided by policy", "decided")
    if item.decision is not None:
        d = item.decision
        why = f" ({d.reason})" if d.reason else ""
        raise ApprovalError(f"approval {item.approval_id} is already {d.decision} by "
                            f"{d.decided_by} at {d.decided_at:%Y-%m-%d %H:%M:%S %Z}{why}; the "
                            "first decision stands", "decided")


def make_decision(item: ActionRecord, verdict: Verdict, by: str, reason: str,
                  signer: Signer) -> ApprovalDecision:
    """`by` is the identity the caller authenticated (a token's name, a key's identity), never
    a name the request itself brought."""
    by, reason = by.strip(), reason.strip()
    if not by:
        raise ApprovalError("by: who decides must not be empty", "invalid")
    if verdict == "deny" and not reason:
        raise ApprovalError("reason: a denial needs a reason", "invalid")
    if item.requested is None:
        raise ApprovalError(f"approval {item.approval_id} was never waiting for a person",
                            "decided")
    return signer.seal("person", ApprovalDecision(
        approval_id=item.approval_id, request_id=item.request_id, source_id=item.source_id,
        action=item.action, decision="approved" if verdict == "approve" else "denied",
        decided_by=by, via="person", reason=reason, decided_at=now(),
        proposal=item.requested))


def cli_approver(keys: Keyring, fallback: str) -> tuple[Signer, str]:
    """The CLI's signing key and the identity it decides as: the one the trust binds to that
    key, else `fallback` (COUNTERPOINT_APPROVER, your user name, the demo's name)."""
    signer = keys.signer("cli")
    trusted = keys.trust.keys.get(signer.key_id)
    return signer, (trusted.identity if trusted and trusted.identity else fallback)


def decision_event_id(d: ApprovalDecision) -> str:
    return derive_event_id(d.approval_id, "person", d.decision, d.decided_by)


async def send_decision(sender: Sender, item: ActionRecord, d: ApprovalDecision, *,
                        source: str) -> str:
    """Publish a person's decision into the request's trace; returns its event id."""
    event_id = decision_event_id(d)
    envelope = Envelope(id=event_id, source=source, type=APPROVALS_DECIDED.ce_type, time=now(),
                        request_id=d.request_id, causation_id=item.requested_event,
                        subject=d.source_id)
    headers = envelope.to_headers()
    parent = tracing.extract(item.trace_headers) if item.trace_headers else None
    with tracing.send_span(APPROVALS_DECIDED.name, parent=parent, request_id=d.request_id,
                           event_id=event_id):
        tracing.inject(headers)
        await sender.send(APPROVALS_DECIDED.name, d.model_dump_json().encode(),
                          key=d.request_id.encode(), headers=headers)
    return event_id


async def read_book(config: KafkaConfig, trust: Trust, policy: ApprovalPolicy,
                    topics: Sequence[Topic[Any]] = APPROVAL_TOPICS) -> ApprovalBook:
    """Everything on the approval topics so far that passes the checks."""
    book = ApprovalBook(trust, policy)
    async with aclosing(tail(config, [t.name for t in topics], idle_timeout_s=0.2)) as stream:
        async for record in stream:
            book.apply(record)
    return book


# --- what the gateway shows ----------------------------------------------------------------


class DecisionView(BaseModel):
    decision: str
    by: str
    via: str
    reason: str
    at: str | None


class ExecutionView(BaseModel):
    outcome: str
    detail: str
    by: str
    at: str | None


class ActionView(BaseModel):
    """One proposed action of a request: proposed -> decided (by whom) -> executed."""

    approval_id: str
    request_id: str
    source_id: str
    action: str
    target: str
    risk: str
    state: State
    needs_approval: bool
    requested_at: str | None
    expires_at: str | None
    reason: str | None
    decision: DecisionView | None
    later_decisions_ignored: int
    escalated: str | None
    executed: ExecutionView | None

    @classmethod
    def of(cls, item: ActionRecord) -> ActionView:
        return cls.model_validate(item.as_json())
