"""The providers' published example bodies, and headers signed as each provider signs them.

Written from the providers' documentation, not from counterpoint.infra.intake, so a test that
signs here and verifies there checks the product against the documented scheme.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"

EXAMPLES = {
    "github": "github_issues_opened.json",
    "jira": "jira_issue_created.json",
    "zendesk": "zendesk_ticket_created.json",
    "pagerduty": "pagerduty_incident_triggered.json",
    "grafana": "grafana_firing.json",
}


def example(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed(provider: str, secret: str, raw: bytes, *, delivery: str = "delivery-1",
           at: float | None = None) -> dict[str, str]:
    """The headers `provider` sends with `raw`, signed with `secret` at time `at`."""
    at = time.time() if at is None else at
    if provider == "github":
        return {"X-Hub-Signature-256": "sha256=" + _hex(secret, raw),
                "X-GitHub-Event": "issues", "X-GitHub-Delivery": delivery}
    if provider == "jira":
        return {"X-Hub-Signature": "sha256=" + _hex(secret, raw),
                "X-Atlassian-Webhook-Identifier": delivery}
    if provider == "zendesk":
        stamp = datetime.fromtimestamp(int(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        mac = hmac.new(secret.encode(), stamp.encode() + raw, hashlib.sha256).digest()
        return {"X-Zendesk-Webhook-Signature": base64.b64encode(mac).decode(),
                "X-Zendesk-Webhook-Signature-Timestamp": stamp,
                "X-Zendesk-Webhook-Invocation-Id": delivery}
    if provider == "pagerduty":
        return {"X-PagerDuty-Signature": "v1=" + _hex(secret, raw), "X-Webhook-Id": delivery}
    if provider == "grafana":
        stamp = str(int(at))
        return {"X-Grafana-Alerting-Signature": _hex(secret, stamp.encode() + b":" + raw),
                "X-Grafana-Alerting-Signature-Timestamp": stamp}
    raise ValueError(provider)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}
