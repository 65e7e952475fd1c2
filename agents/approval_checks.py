"""What makes a proposal or a decision one to act on. The executor, the desk and every reader
of the approval topics (gateway, CLI) apply the same checks, so a forged event is refused
everywhere alike (`Refused`, whose reason the dead letter carries).

A decision is acted on only when all of these hold:
  - it is signed by a key trusted for its kind (`via`): person, policy or expiry; a person's
    own key (one with an identity in the trust) signs only as that person;
  - it carries the proposal it decides, signed by a key trusted for proposals;
  - it matches that proposal: approval id, request, source, action kind and target, risk, and
    the approval id is the one derived from them;
  - its kind allows its verdict: a person approves or denies, policy only approves and only
    what this process's own risk configuration lets through without a person, an expiry only
    expires (denies).
"""

from __future__ import annotations

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.signing import Refused, Trust, TrustedKey
from counterpoint.schemas.approvals import ApprovalDecision, ApprovalRequested, action_id

VERDICTS = {"person": ("approved", "denied"), "policy": ("approved",), "expiry": ("expired",)}


def check_request(trust: Trust, r: ApprovalRequested) -> TrustedKey:
    what = f"proposal {r.approval_id} ({r.action.action} on {r.action.target})"
    key = trust.check("proposal", r, what)
    if r.approval_id != action_id(r.request_id, r.action.action, r.action.target):
        raise Refused("mismatch", f"{what}: its approval id is not the one its request, "
                      "action and target give")
    return key


def check_decision(trust: Trust, policy: ApprovalPolicy, d: ApprovalDecision) -> TrustedKey:
    """The key that signed `d`, once every check above passed; Refused naming the first that
    failed."""
    what = (f"{d.via} decision {d.decision!r} on {d.approval_id} ({d.action.action} on "
            f"{d.action.target}, by {d.decided_by!r})")
    key = trust.check(d.via, d, what)
    if d.via == "person" and key.identity is not None and d.decided_by != key.identity:
        raise Refused("identity-mismatch", f"{what}: key {key.key_id} signs only as "
                      f"{key.identity!r}")
    if d.proposal is None:
        raise Refused("unproposed", f"{what}: it carries no proposal; nothing was proposed")
    try:
        check_request(trust, d.proposal)
    except Refused as exc:
        raise Refused("unproposed", f"{what}: its proposal is refused: {exc}") from exc
    p = d.proposal
    theirs = (p.approval_id, p.request_id, p.source_id, p.action)
    if (d.approval_id, d.request_id, d.source_id, d.action) != theirs:
        raise Refused("mismatch", f"{what}: it does not match its proposal ({p.action.action} "
                      f"on {p.action.target}, approval {p.approval_id}, request "
                      f"{p.request_id})")
    if d.decision not in VERDICTS[d.via]:
        if d.via == "expiry":
            raise Refused("expiry-must-deny", f"{what}: an expiry can only deny")
        raise Refused("decision-not-allowed", f"{what}: a {d.via} decision may only be "
                      f"{' or '.join(VERDICTS[d.via])}")
    if d.via == "policy":
        risk = policy.risk_of(d.action.action)
        if policy.needs_approval(risk):
            raise Refused("policy-violation", f"{what}: {d.action.action} is {risk} risk "
                          f"here, above the approval threshold ({policy.threshold}); a policy "
                          "approval cannot run it, a person must approve (is the risk "
                          "configuration the same everywhere?)")
    return key
