"""PagerDuty V3 webhooks: `incident.triggered` becomes an alert (the simple alert shape).

Signature: `X-PagerDuty-Signature: v1=<hex HMAC-SHA256 of the body>`, one per signing secret,
comma-separated while a subscription's secret is being rotated; any `v1` one matching is
enough. Delivery id: the event's `id`, which is inside the signed body (PagerDuty repeats the
whole payload on a retry, and its `X-Webhook-Id` header, which is not signed, is not needed).
"""

from __future__ import annotations

from typing import Any

from counterpoint.infra.intake.base import (
    Accepted,
    BadPayload,
    BadSignature,
    Clock,
    Headers,
    Ignored,
    Provider,
    compact,
    from_hex,
    header,
    hmac_digest,
    require_match,
    required_text,
    text_at,
)

SIGNATURE = "X-PagerDuty-Signature"
TRIGGERED = "incident.triggered"
# PagerDuty's urgency says whether someone is woken up; that is our severity.
SEVERITY = {"high": "critical", "low": "warning"}


def verify(secret: bytes, headers: Headers, raw: bytes, _clock: Clock) -> None:
    offered = [from_hex(SIGNATURE, part.strip()[3:])
               for part in header(headers, SIGNATURE).split(",")
               if part.strip().startswith("v1=")]
    if not offered:
        raise BadSignature(SIGNATURE, "no v1=<hex> signature in it")
    require_match(SIGNATURE, hmac_digest(secret, raw), offered)


def interpret(_headers: Headers, body: dict[str, Any]) -> Accepted | Ignored:
    event = body.get("event")
    if not isinstance(event, dict):
        raise BadPayload("event", "missing: a V3 webhook carries one event object")
    event_type = text_at(event, "event_type") or "(no event_type)"
    if event_type != TRIGGERED:
        return Ignored(event_type, f"only `{TRIGGERED}` starts a request")
    event_id = required_text(body, "event.id")
    incident = event.get("data")
    if not isinstance(incident, dict):
        raise BadPayload("event.data", "missing: it is the incident")
    alert = compact({
        "id": required_text(body, "event.data.id"),
        "service": required_text(body, "event.data.service.summary"),
        "severity": SEVERITY.get(text_at(incident, "urgency") or "", "warning"),
        "summary": required_text(body, "event.data.title"),
        "starts_at": text_at(incident, "created_at") or text_at(event, "occurred_at"),
        "priority": text_at(incident, "priority.summary"),
        "incident_number": text_at(incident, "number"),
        "url": text_at(incident, "html_url"),
    })
    return Accepted(alert, event_id, event_type)


PROVIDER = Provider(
    name="pagerduty", title="PagerDuty", kind="alert", signature_header=SIGNATURE,
    verify=verify, interpret=interpret,
    setup="Integrations → Generic Webhooks (v3) → New Webhook, URL "
          "`.../v1/webhooks/pagerduty`, event `incident.triggered`; the signing secret "
          "PagerDuty shows once goes in COUNTERPOINT_PAGERDUTY_WEBHOOK_SECRET.")
