"""GitHub issues: an `issues` event with action `opened` becomes a ticket.

Signature: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`, keyed by the webhook's
secret. Delivery id: `X-GitHub-Delivery` (a GUID GitHub repeats when a delivery is redelivered).
GitHub's `ping` (sent when the webhook is created) and every other event or action is ignored.
"""

from __future__ import annotations

from typing import Any

from counterpoint.infra.intake.base import (
    Accepted,
    BadPayload,
    Clock,
    Headers,
    Ignored,
    Provider,
    compact,
    header,
    hmac_digest,
    prefixed_hex,
    require_match,
    required_text,
    text_at,
)

SIGNATURE = "X-Hub-Signature-256"


def verify(secret: bytes, headers: Headers, raw: bytes, _clock: Clock) -> None:
    _, digest = prefixed_hex(SIGNATURE, header(headers, SIGNATURE))
    require_match(SIGNATURE, hmac_digest(secret, raw), [digest])


def interpret(headers: Headers, body: dict[str, Any]) -> Accepted | Ignored:
    event = headers.get("x-github-event", "").strip() or "(no X-GitHub-Event)"
    action = text_at(body, "action")
    event_type = f"{event}.{action}" if action else event
    if event != "issues" or action != "opened":
        return Ignored(event_type, "only `issues` events with action `opened` start a request")
    delivery = headers.get("x-github-delivery", "").strip()
    if not delivery:
        raise BadPayload("X-GitHub-Delivery", "missing: it is the delivery's id")
    repo = required_text(body, "repository.full_name")
    number = required_text(body, "issue.number")
    title = required_text(body, "issue.title")
    ticket = compact({
        "id": f"{repo}#{number}",
        "subject": title,
        # An issue may be opened with a title only; the ticket's body is then the title.
        "body": text_at(body, "issue.body") or title,
        "customer_id": text_at(body, "issue.user.login"),
        "channel": "github",
        "url": text_at(body, "issue.html_url"),
        "labels": [lb["name"] for lb in body["issue"].get("labels") or []
                   if isinstance(lb, dict) and isinstance(lb.get("name"), str)],
    })
    return Accepted(ticket, delivery, event_type)


PROVIDER = Provider(
    name="github", title="GitHub issues", kind="ticket", signature_header=SIGNATURE,
    verify=verify, interpret=interpret,
    setup="Repository or organization Settings → Webhooks → Add webhook: Payload URL "
          "`.../v1/webhooks/github`, content type `application/json`, the secret in "
          "COUNTERPOINT_GITHUB_WEBHOOK_SECRET, event *Issues*.")
