"""Zendesk: a new ticket, from an event subscription or from a trigger, becomes a ticket.

Signature: `X-Zendesk-Webhook-Signature` is base64(HMAC-SHA256(timestamp + body)) with the
webhook's signing secret, and `X-Zendesk-Webhook-Signature-Timestamp` is the timestamp it
signed (ISO 8601); one signed too far from now is refused, so a captured request cannot be
replayed later.

Two bodies are understood:

- an event subscription's `zen:event-type:ticket.created` (Zendesk's fixed schema: `type`,
  `id`, `detail` with the ticket's `id`, `subject`, `description`, `requester_id`, ...).
  Delivery id: the event's `id`.
- a trigger's (Zendesk leaves a trigger's body to whoever writes the trigger), written as
  `TRIGGER_BODY` says. Delivery id: `X-Zendesk-Webhook-Invocation-Id`, the invocation whose
  retries Zendesk lists as attempts of it.
"""

from __future__ import annotations

from datetime import datetime
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
    from_base64,
    header,
    hmac_digest,
    require_match,
    required_text,
    text_at,
)

SIGNATURE = "X-Zendesk-Webhook-Signature"
TIMESTAMP = "X-Zendesk-Webhook-Signature-Timestamp"
CREATED = "zen:event-type:ticket.created"
TRIGGER = "trigger"

# The JSON body to give a trigger ("Ticket is Created" → Notify by webhook), in Zendesk's
# placeholders. Only `ticket.id` and one of subject/description are needed.
TRIGGER_BODY = """{"ticket": {
  "id": "{{ticket.id}}",
  "subject": "{{ticket.title}}",
  "description": "{{ticket.description}}",
  "requester_id": "{{ticket.requester.id}}",
  "priority": "{{ticket.priority}}",
  "channel": "{{ticket.via}}",
  "url": "{{ticket.link}}"
}}"""


def verify(secret: bytes, headers: Headers, raw: bytes, clock: Clock) -> None:
    offered = from_base64(SIGNATURE, header(headers, SIGNATURE))
    stamp = header(headers, TIMESTAMP)
    try:
        signed_at = datetime.fromisoformat(stamp)
    except ValueError:
        raise BadSignature(TIMESTAMP, f"{stamp!r} is not an ISO 8601 time") from None
    if signed_at.tzinfo is None:
        raise BadSignature(TIMESTAMP, f"{stamp!r} has no time zone")
    # The signature covers the timestamp, so it is checked first: a forged time is a bad
    # signature, not a stale one.
    require_match(SIGNATURE, hmac_digest(secret, stamp.encode(), raw), [offered])
    clock.check(TIMESTAMP, signed_at)


def _ticket(fields: dict[str, Any], prefix: str, channel: str | None) -> dict[str, Any]:
    ticket_id = text_at(fields, "id")
    if ticket_id is None:
        raise BadPayload(f"{prefix}id", "missing or empty")
    subject = text_at(fields, "subject")
    description = text_at(fields, "description")
    if subject is None and description is None:
        raise BadPayload(f"{prefix}subject", "the ticket has neither a subject nor a "
                         "description")
    return compact({
        "id": f"zendesk:{ticket_id}",  # Zendesk's ids are bare numbers: say whose they are
        "subject": subject,
        "body": description or subject,
        "customer_id": text_at(fields, "requester_id"),
        "channel": channel,
        "priority": (text_at(fields, "priority") or "").lower() or None,
        "url": text_at(fields, "url"),
        "tags": [t for t in fields.get("tags") or [] if isinstance(t, str)],
    })


def interpret(headers: Headers, body: dict[str, Any]) -> Accepted | Ignored:
    event_type = text_at(body, "type")
    if event_type is None and isinstance(body.get("ticket"), dict):
        invocation = headers.get("x-zendesk-webhook-invocation-id", "").strip()
        if not invocation:
            raise BadPayload("X-Zendesk-Webhook-Invocation-Id", "missing: a trigger's delivery "
                             "is identified by it")
        fields = body["ticket"]
        ticket = _ticket(fields, "ticket.", text_at(fields, "channel") or "zendesk")
        return Accepted(ticket, invocation, TRIGGER)
    if event_type != CREATED:
        return Ignored(event_type or "(no type)", f"only `{CREATED}` events, and trigger "
                       "bodies with a `ticket` object, start a request")
    event_id = required_text(body, "id")
    detail = body.get("detail")
    if not isinstance(detail, dict):
        raise BadPayload("detail", "missing: the event carries the ticket in it")
    ticket = _ticket(detail, "detail.", text_at(detail, "via.channel") or "zendesk")
    return Accepted(ticket, event_id, CREATED)


PROVIDER = Provider(
    name="zendesk", title="Zendesk", kind="ticket", signature_header=SIGNATURE,
    verify=verify, interpret=interpret,
    setup="Admin Center → Apps and integrations → Webhooks → Create webhook, endpoint "
          "`.../v1/webhooks/zendesk`, its signing secret in COUNTERPOINT_ZENDESK_WEBHOOK_SECRET;"
          " subscribe it to `zen:event-type:ticket.created`, or connect it to a trigger whose "
          "JSON body is the one in the README.")
