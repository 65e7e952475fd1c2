"""Which proposed actions wait for a person: risk per action kind, and a threshold.

Risk comes from configuration, never from the model: a table of action kinds (DEFAULT_RISK,
overridable with COUNTERPOINT_ACTION_RISK) and a kind nobody configured is high risk, so an
action a model invents can never run without a person. Actions above the threshold
(COUNTERPOINT_APPROVAL_THRESHOLD, default `low`) go to `approvals.requested` and wait; the
others are approved by policy on `approvals.decided` at once. Every action gets a proposal
signed by synthesis; a policy decision carries its own and is signed too (agents/signing.py),
so the executor can tell both from forgeries.

Synthesis calls `emits` with its result; the ids of what it returns derive from the same event
as the result's, so a recomposed result re-emits the same approvals (and consumers dedupe).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal

from counterpoint.agents.json_setting import json_object_setting
from counterpoint.agents.signing import Signer
from counterpoint.bus.agent import Emit
from counterpoint.schemas.approvals import (
    RISKS,
    ActionSpec,
    ApprovalDecision,
    ApprovalRequested,
    Risk,
    action_id,
)
from counterpoint.schemas.envelope import now
from counterpoint.schemas.events import ProposedAction, Result
from counterpoint.topics.registry import APPROVALS_DECIDED, APPROVALS_REQUESTED, Topic

EMITS: Final[tuple[Topic[Any], ...]] = (APPROVALS_REQUESTED, APPROVALS_DECIDED)

Threshold = Literal["none", "low", "medium", "high"]

DEFAULT_RISK: Final[Mapping[str, Risk]] = {
    "send_password_reset": "low",
    "unlock_account": "medium",
    "restart_service": "medium",
    "refund": "high",
    "refund_invoice": "high",
    "rollback_deploy": "high",
}
UNKNOWN_RISK: Final[Risk] = "high"
POLICY: Final = "policy"


def parse_risk_table(text: str) -> dict[str, Risk]:
    """COUNTERPOINT_ACTION_RISK: a JSON object `{"refund": "medium", ...}`, or the path of a
    file holding one. Raises ValueError saying what is wrong."""
    table = json_object_setting("COUNTERPOINT_ACTION_RISK", text, "of action -> risk")
    bad = {k: v for k, v in table.items() if v not in RISKS}
    if bad:
        raise ValueError(f"risk must be one of {', '.join(RISKS)}; got "
                         + ", ".join(f"{k}={v!r}" for k, v in bad.items()))
    return {str(k): v for k, v in table.items()}


@dataclass(frozen=True)
class ApprovalPolicy:
    risks: Mapping[str, Risk] = field(default_factory=lambda: dict(DEFAULT_RISK))
    # Actions whose risk is above this wait for a person; `none`: every action waits.
    threshold: Threshold = "low"
    ttl: timedelta = timedelta(hours=1)

    @classmethod
    def configured(cls, overrides: Mapping[str, Risk] | None = None, threshold: Threshold = "low",
                   ttl: timedelta = timedelta(hours=1)) -> ApprovalPolicy:
        return cls({**DEFAULT_RISK, **(overrides or {})}, threshold, ttl)

    def risk_of(self, action: str) -> Risk:
        return self.risks.get(action, UNKNOWN_RISK)

    def needs_approval(self, risk: Risk) -> bool:
        if self.threshold == "none":
            return True
        return RISKS.index(risk) > RISKS.index(self.threshold)

    def govern(self, proposed: list[ProposedAction]) -> list[ProposedAction]:
        """The proposed actions with their configured risk in place of the provider's."""
        return [p.model_copy(update={"risk": self.risk_of(p.action)}) for p in proposed]

    def emits(self, result: Result, derive_from: str, signer: Signer) -> list[Emit]:
        """One signed approval request per action above the threshold, one signed policy
        approval (carrying its signed proposal) per other."""
        return self.emits_for(result.request_id, result.source_id, result.title,
                              result.proposed_actions, derive_from, signer)

    def emits_for(self, request_id: str, source_id: str, title: str,
                  proposed_actions: Sequence[ProposedAction], derive_from: str,
                  signer: Signer) -> list[Emit]:
        """`emits` for any agent's proposals (agents/patterns/approval.py)."""
        out: list[Emit] = []
        at = now()
        for proposed in proposed_actions:
            risk = self.risk_of(proposed.action)
            spec = ActionSpec(action=proposed.action, target=proposed.target, risk=risk)
            aid = action_id(request_id, spec.action, spec.target)
            waits = self.needs_approval(risk)
            if not waits:
                why = f"{risk} risk is not above the approval threshold ({self.threshold})"
            elif self.threshold == "none":
                why = f"{risk} risk; every action needs approval"
            else:
                why = f"{risk} risk, above the approval threshold ({self.threshold})"
            request = signer.seal("proposal", ApprovalRequested(
                approval_id=aid, request_id=request_id, source_id=source_id,
                action=spec, reason=f"{spec.action} on {spec.target} is {why}; proposed for: "
                f"{title}", requested_at=at, expires_at=at + self.ttl))
            if waits:
                out.append(Emit(APPROVALS_REQUESTED, request, key=request_id,
                                tag=f"approval/{aid}", derive_from=derive_from,
                                subject=source_id))
            else:
                decision = signer.seal("policy", ApprovalDecision(
                    approval_id=aid, request_id=request_id, source_id=source_id,
                    action=spec, decision="approved", decided_by=POLICY, via="policy",
                    reason=why, decided_at=at, proposal=request))
                out.append(Emit(APPROVALS_DECIDED, decision, key=request_id,
                                tag=f"policy/{aid}", derive_from=derive_from,
                                subject=source_id))
        return out
