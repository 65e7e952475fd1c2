"""Events of human approval and action execution.

An action synthesis proposes gets an `approval_id` (also its action id) derived from the request
id, the action and its target, so recomposing a result after a crash names the same action
again. Its life, all keyed by request id:

    approvals.requested   ApprovalRequested   above the risk threshold: waits for a person
    approvals.decided     ApprovalDecision    approved | denied | expired; by a person, by
                                              policy (low risk) or by the desk (expiry)
    approvals.escalated   ApprovalEscalated   nobody decided in time
    actions.executed      ActionExecuted      what the executor did: succeeded | failed, or
                                              skipped (denied/expired: never run)

The first decision in the log for an approval id wins; later ones are ignored by everyone.

Signed (agents/signing.py): synthesis signs every proposal (an `ApprovalRequested`, kind
`proposal`), including the low-risk ones it approves at once, which are not published on
approvals.requested but travel inside their policy decision. Every decision carries the signed
proposal it decides and is signed itself, by the kind of signer its `via` names: `person` (the
gateway or the CLI, under the approver's identity), `policy` (synthesis) or `expiry` (the
desk). The signature covers every field but itself, the embedded proposal and its signature
included. Both are optional in the schema so that an unsigned event decodes and is refused
with a reason that says so, instead of as a schema violation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from counterpoint.schemas.envelope import derive_event_id

Risk = Literal["low", "medium", "high"]
RISKS: tuple[Risk, ...] = ("low", "medium", "high")
Decision = Literal["approved", "denied", "expired"]
# Who decided: a person (CLI, gateway), the risk policy (low risk), or the desk (expiry).
DecidedVia = Literal["person", "policy", "expiry"]
Outcome = Literal["succeeded", "failed", "skipped"]
# What a signature vouches for; a trusted key may sign only the kinds its trust entry lists.
SignedKind = Literal["proposal", "person", "policy", "expiry"]


class _Internal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def action_id(request_id: str, action: str, target: str) -> str:
    """The one id of `action` on `target` within a request: its approval id and action id."""
    return derive_event_id(request_id, "action", action, target)


class ActionSpec(_Internal):
    """What to do: an action kind, what it acts on, and its configured risk."""

    action: str
    target: str
    risk: Risk


class Signature(_Internal):
    """An Ed25519 signature (base64) by the key `key_id` names in the verifier's trust."""

    key_id: str
    value: str


class ApprovalRequested(_Internal):
    """A proposed action, signed by synthesis (kind `proposal`)."""

    approval_id: str
    request_id: str
    source_id: str
    action: ActionSpec
    reason: str
    requested_at: datetime
    expires_at: datetime
    signature: Signature | None = None


class ApprovalDecision(_Internal):
    """A decision carries the signed proposal it decides, so the executor needs no join."""

    approval_id: str
    request_id: str
    source_id: str
    action: ActionSpec
    decision: Decision
    decided_by: str
    via: DecidedVia
    reason: str = ""
    decided_at: datetime
    proposal: ApprovalRequested | None = None
    signature: Signature | None = None


class ApprovalEscalated(_Internal):
    approval_id: str
    request_id: str
    source_id: str
    action: ActionSpec
    text: str
    requested_at: datetime
    expired_at: datetime


class ActionExecuted(_Internal):
    action_id: str
    request_id: str
    source_id: str
    action: ActionSpec
    outcome: Outcome
    detail: str
    decided_by: str
    executed_at: datetime
    executed_by: str
