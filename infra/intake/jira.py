"""Jira: a `jira:issue_created` webhook becomes a ticket.

Signature: Jira signs admin webhooks that have a secret the WebSub way, `X-Hub-Signature:
sha256=<hex HMAC of the body>` (Jira Cloud; Jira Data Center uses the same header, SHA-256
by default). Delivery id: `X-Atlassian-Webhook-Identifier`, which Jira Cloud keeps the same on
every retry; a sender without it (older Data Center) is identified by the issue and the event's
`timestamp`, which a retry repeats too.
"""

from __future__ import annotations

from typing import Any

from counterpoint.infra.intake.base import (
    Accepted,
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

SIGNATURE = "X-Hub-Signature"
CREATED = "jira:issue_created"


def verify(secret: bytes, headers: Headers, raw: bytes, _clock: Clock) -> None:
    algorithm, digest = prefixed_hex(SIGNATURE, header(headers, SIGNATURE),
                                     ("sha256", "sha384", "sha512"))
    require_match(SIGNATURE, hmac_digest(secret, raw, algorithm=algorithm), [digest])


def adf_text(node: Any) -> str:
    """The plain text of an Atlassian Document Format value (REST v3 descriptions)."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "".join(adf_text(n) for n in node)
    if not isinstance(node, dict):
        return ""
    if node.get("type") == "text":
        return str(node.get("text", ""))
    inner = adf_text(node.get("content", []))
    return inner + "\n" if node.get("type") in ("paragraph", "heading") else inner


def _name(value: Any) -> str | None:
    """Jira's priority is an object with a `name`; its documented example gives a string."""
    if isinstance(value, dict):
        return text_at(value, "name")
    return value.strip() or None if isinstance(value, str) else None


def _person(value: Any) -> str | None:
    for key in ("accountId", "emailAddress", "name", "key"):
        found = text_at(value, key)
        if found:
            return found
    return None


def interpret(headers: Headers, body: dict[str, Any]) -> Accepted | Ignored:
    event_type = text_at(body, "webhookEvent") or "(no webhookEvent)"
    if event_type != CREATED:
        return Ignored(event_type, f"only `{CREATED}` starts a request")
    key = required_text(body, "issue.key")
    summary = required_text(body, "issue.fields.summary")
    fields: dict[str, Any] = body["issue"]["fields"]  # a dict: the summary was found in it
    description = adf_text(fields.get("description")).strip()
    delivery = (headers.get("x-atlassian-webhook-identifier", "").strip()
                or f"{text_at(body, 'issue.id') or key}@{text_at(body, 'timestamp')}")
    ticket = compact({
        "id": key,
        "subject": summary,
        "body": description or summary,
        "customer_id": _person(fields.get("reporter")) or _person(body.get("user")),
        "channel": "jira",
        "priority": _name(fields.get("priority")),
        "url": text_at(body, "issue.self"),
        "labels": [lb for lb in fields.get("labels") or [] if isinstance(lb, str)],
    })
    return Accepted(ticket, delivery, event_type)


PROVIDER = Provider(
    name="jira", title="Jira", kind="ticket", signature_header=SIGNATURE,
    verify=verify, interpret=interpret,
    setup="Jira settings → System → WebHooks → Create a WebHook: URL "
          "`.../v1/webhooks/jira`, a Secret (also in COUNTERPOINT_JIRA_WEBHOOK_SECRET), "
          "event Issue → created.")
