"""Closing the request of an alert that resolved.

Triage turns a notification that reports resolved alerts into one `AlertResolved` on
`triage.closures`, for its first resolved alert, under the request id of that alert's firing
notification (schemas/identity.py): the request that group's investigation was filed under,
which the receipt of a resolved notification names. One closure, not one per alert: a group of
10,000 resolved alerts closes its request with one result, not 10,000 (other alerts of a group
never started a request of their own unless they led a firing notification; such a request
stays open). Synthesis, which owns the request's join, closes it: a request still
being investigated gets its result now, marked resolved (findings so far, missing ones named);
a request whose result is out (or was never seen here) gets a short closing result of its own.
Either way the last result on `synthesis.results` for the request carries `resolution`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from counterpoint.bus.agent import Emit, Incoming
from counterpoint.schemas.events import (
    Alert,
    AlertmanagerWebhook,
    AlertResolved,
    Generation,
    Resolution,
    Result,
    Usage,
)
from counterpoint.schemas.identity import alert_request_id, resolved_alerts
from counterpoint.topics.registry import SYNTHESIS_RESULTS, TRIAGE_CLOSURES

# Closing text is written by a rule, not a model; labelled so, like the offline provider.
RULE = Generation(provider="rule", model="alert-resolved", offline=True)


def closures_of(event: Incoming[Alert]) -> list[Emit]:
    """The closure of an Alertmanager notification's request, if it reports an alert resolved
    (none for other alerts)."""
    body = event.data
    if not isinstance(body, AlertmanagerWebhook):
        return []
    resolved = resolved_alerts(body)
    if not resolved:
        return []
    alert = resolved[0]
    rid = alert_request_id(alert)
    labels = {**body.commonLabels, **alert.labels}
    name = labels.get("alertname", "alert")
    summary = alert.annotations.get("summary") or body.commonAnnotations.get("summary") or name
    source_id = alert.fingerprint or body.groupKey
    closure = AlertResolved(
        request_id=rid, source_id=source_id, title=f"{name}: {summary}",
        resolved_at=alert.endsAt, labels=labels, callback_url=body.callback_url,
        origin=event.envelope.source)
    return [Emit(TRIAGE_CLOSURES, closure, key=rid, tag=f"resolved:{rid}", subject=source_id,
                 request_id=rid)]


def _when(closure: AlertResolved) -> str:
    return closure.resolved_at.isoformat() if closure.resolved_at else "an unreported time"


def resolved_during_investigation(result: Result, closure: AlertResolved) -> Result:
    """The request's result, composed early because its alert resolved meanwhile."""
    note = (f"Resolved: Alertmanager reported the alert resolved at {_when(closure)} while it "
            "was being investigated; this runbook holds the findings gathered until then.")
    return result.model_copy(update={
        "text": f"{note}\n\n{result.text}",
        "resolution": Resolution(resolved_at=closure.resolved_at, during="investigation")})


def closing_result(closure: AlertResolved, during: Literal["after"] = "after") -> Result:
    """A closing result of its own, for a request with no investigation running here."""
    return Result(
        request_id=closure.request_id, source_id=closure.source_id, kind="runbook",
        title=closure.title,
        text=(f"Resolved: {closure.title}. Alertmanager reported the alert resolved at "
              f"{_when(closure)}; the request is closed. Any runbook published for it "
              "earlier stays valid as a record of the incident."),
        priority="low", status="complete", findings=[], generation=RULE, usage=Usage(),
        completed_at=datetime.now(UTC), callback_url=closure.callback_url,
        origin=closure.origin,
        resolution=Resolution(resolved_at=closure.resolved_at, during=during))


def closing_emit(closure_event_id: str, closure: AlertResolved) -> Emit:
    # Its own id (derived from the closure), so consumers that dedupe by result id keep it
    # apart from the runbook published before it.
    return Emit(SYNTHESIS_RESULTS, closing_result(closure), key=closure.request_id,
                tag="closing", subject=closure.source_id, request_id=closure.request_id,
                derive_from=closure_event_id)
