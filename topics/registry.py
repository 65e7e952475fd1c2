"""The built-in pipeline's topics (tickets and alerts), declared once.

Its agents declare which of these they consume and emit, and the topics an agent process needs
are created from those declarations (a user's own topics are declared in the user's code:
topics/topic.py). Partition counts matter: `triage.decisions` and `investigation.findings` are
both keyed by request id and have the same count, so with a range assignor partition N of both
lands on the same synthesis process and one request's join happens in one place (checked when
synthesis is built).
"""

from __future__ import annotations

import re
from typing import Any, Final

from counterpoint.schemas.approvals import (
    ActionExecuted,
    ApprovalDecision,
    ApprovalEscalated,
    ApprovalRequested,
)
from counterpoint.schemas.events import (
    SKILL_PATTERN,
    Alert,
    AlertResolved,
    Finding,
    InvestigationTask,
    Result,
    Ticket,
    TriageDecision,
    WebhookDelivery,
)
from counterpoint.topics.topic import DEADLETTER_NAME, DEADLETTER_PARTITIONS, Topic

__all__ = ["ALL_TOPICS", "DEADLETTER_NAME", "DEADLETTER_PARTITIONS", "Topic"]


def _topic(name: str, ce_type: str, event_type: Any, **kw: Any) -> Topic[Any]:
    return Topic(name=name, ce_type=ce_type, event_type=event_type, **kw)


INTAKE_TICKETS: Final[Topic[Ticket]] = _topic(
    "intake.tickets", "counterpoint.ticket.received", Ticket, key="source", raw_intake=True,
    description="Help-desk tickets, raw JSON from any client or CloudEvents",
)
INTAKE_ALERTS: Final[Topic[Alert]] = _topic(
    "intake.alerts", "counterpoint.alert.received", Alert, key="source", raw_intake=True,
    description="Alertmanager webhook bodies or simple alerts, raw JSON or CloudEvents",
)
TRIAGE_DECISIONS: Final[Topic[TriageDecision]] = _topic(
    "triage.decisions", "counterpoint.triage.decision", TriageDecision, key="request_id",
    description="Triage's plan per request: category, priority and the investigations spawned",
)
INVESTIGATION_FINDINGS: Final[Topic[Finding]] = _topic(
    "investigation.findings", "counterpoint.investigation.finding", Finding, key="request_id",
    description="One finding per investigation task (fan-in to synthesis)",
)
SYNTHESIS_RESULTS: Final[Topic[Result]] = _topic(
    "synthesis.results", "counterpoint.synthesis.result", Result, key="request_id",
    description="Final reply or runbook per request",
)

# Human approval and execution (schemas/approvals.py). Keyed by request id with equal partition
# counts, so the approval desk (range assignor) sees one request's approvals and decisions in
# one process, in log order: the first decision in the log is the one that counts.
APPROVALS_REQUESTED: Final[Topic[ApprovalRequested]] = _topic(
    "approvals.requested", "counterpoint.approval.requested", ApprovalRequested,
    key="request_id", description="Proposed actions above the risk threshold, waiting for a person",
)
APPROVALS_DECIDED: Final[Topic[ApprovalDecision]] = _topic(
    "approvals.decided", "counterpoint.approval.decided", ApprovalDecision, key="request_id",
    description="Approved, denied or expired; by a person, by policy (low risk) or by expiry",
)
APPROVALS_ESCALATED: Final[Topic[ApprovalEscalated]] = _topic(
    "approvals.escalated", "counterpoint.approval.escalated", ApprovalEscalated,
    key="request_id", description="Approvals nobody decided before they expired",
)
ACTIONS_EXECUTED: Final[Topic[ActionExecuted]] = _topic(
    "actions.executed", "counterpoint.action.executed", ActionExecuted, key="request_id",
    description="What the executor did with each decided action, and the outcome",
)
# Keyed by request id with the same partition count as triage.decisions, so a closure meets
# its request's plan in the synthesis process that owns it.
TRIAGE_CLOSURES: Final[Topic[AlertResolved]] = _topic(
    "triage.closures", "counterpoint.triage.alert_resolved", AlertResolved, key="request_id",
    description="Alerts Alertmanager reports resolved: close the request opened for them",
)
WEBHOOK_DELIVERIES: Final[Topic[WebhookDelivery]] = _topic(
    "webhooks.deliveries", "counterpoint.webhooks.delivered", WebhookDelivery,
    key="request_id", description="Results POSTed to a webhook and acknowledged by it",
)

# The built-in pipeline's skills. Any other skill is a task topic like these, declared by
# whoever consumes or emits it (task_topic), with no list to edit.
SKILLS: Final[tuple[str, ...]] = ("billing", "account", "infrastructure", "knowledge")


def task_topic(skill: str) -> Topic[InvestigationTask]:
    """The task topic of one investigation skill: each skill scales as its own consumer group.

    Keyed by the task's cache key (skill, focus and what the request is about;
    agents/reuse.py), so the tasks of one request spread over partitions and run in parallel,
    while identical tasks of an alert storm queue behind each other in one process, which
    investigates once and reuses the finding.
    """
    if not re.match(SKILL_PATTERN, skill):
        raise ValueError(f"skill {skill!r}: use a letter, then letters, digits, _ or -")
    return _topic(f"investigation.tasks.{skill}", f"counterpoint.investigation.task.{skill}",
                  InvestigationTask, key="cache_key",
                  description=f"Investigation tasks for the {skill} skill")


TASKS: Final[dict[str, Topic[InvestigationTask]]] = {s: task_topic(s) for s in SKILLS}

ALL_TOPICS: Final[tuple[Topic[Any], ...]] = (
    INTAKE_TICKETS,
    INTAKE_ALERTS,
    TRIAGE_DECISIONS,
    *TASKS.values(),
    INVESTIGATION_FINDINGS,
    SYNTHESIS_RESULTS,
    APPROVALS_REQUESTED,
    APPROVALS_DECIDED,
    APPROVALS_ESCALATED,
    ACTIONS_EXECUTED,
    TRIAGE_CLOSURES,
    WEBHOOK_DELIVERIES,
)
