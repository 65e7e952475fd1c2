"""A human-approval gate on any agent's proposed actions.

    gate = ApprovalGate(ctx)                    # the process's policy, keys and trust
    agent = Agent(ctx.name, emits=[DRAFTS, *gate.emits])
    ...
        return [Emit(DRAFTS, draft, key=rid),
                *gate.propose(event, [ProposedAction(action="send_email", target=lead.email,
                                                     risk="high")], title=lead.company)]

Each action goes through the policy synthesis's go through (agents/approval_policy.py): its
risk comes from configuration (COUNTERPOINT_ACTION_RISK; a kind nobody configured is high
risk), an action above the threshold is published to `approvals.requested`, signed as a
proposal, and waits for a person (`counterpoint approvals`, `approve`, `deny`; it expires and
escalates like any approval); the others get a signed policy approval on `approvals.decided`.
Ids derive from the proposing input, so a redelivered proposal is the same approval.

Whoever carries actions out handles `approvals.decided` and runs an action only when
`gate.approved(decision)` says so: it applies the executor's checks (agents/approval_checks.py:
signatures, the proposal it carries, this process's own risk configuration) and raises
Refused, dead-lettered with its reason, for anything forged. Record what ran under the
approval id, so a redelivered decision runs nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from counterpoint.agents.approval_checks import check_decision
from counterpoint.agents.approval_policy import EMITS
from counterpoint.agents.context import AgentContext
from counterpoint.bus.agent import Emit, Incoming
from counterpoint.schemas.approvals import ApprovalDecision
from counterpoint.schemas.events import ProposedAction
from counterpoint.topics.topic import Topic


class ApprovalGate:
    emits: tuple[Topic[Any], ...] = EMITS

    def __init__(self, ctx: AgentContext, role: str = "synthesis") -> None:
        """`role`: the key this process signs proposals with (one trusted for proposals)."""
        self.policy = ctx.approvals
        self.trust = ctx.keys.trust
        self.signer = ctx.keys.signer(role)  # fails at start-up when this process has no key

    def propose(self, event: Incoming[Any], actions: Sequence[ProposedAction], *,
                title: str, source_id: str | None = None) -> list[Emit]:
        """The signed approval requests (or policy approvals) for `actions`, proposed while
        handling `event`, in its request."""
        return self.policy.emits_for(
            event.request_id, source_id or event.envelope.subject or event.request_id, title,
            self.policy.govern(list(actions)), derive_from=event.envelope.id,
            signer=self.signer)

    def approved(self, decision: ApprovalDecision) -> bool:
        """Whether the action `decision` is about may run now (Refused: a forgery)."""
        check_decision(self.trust, self.policy, decision)
        return decision.decision == "approved"
