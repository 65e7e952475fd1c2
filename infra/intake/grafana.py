"""Grafana alerting: the webhook contact point's body, an Alertmanager webhook with more in it.

Signature: Grafana 11.6 and later sign a contact point that has an HMAC secret (Optional
Webhook settings → HMAC Signature): `X-Grafana-Alerting-Signature: <hex HMAC-SHA256>`, over
the body, or over `<unix seconds>:<body>` when a Timestamp Header is set; set it to
`X-Grafana-Alerting-Signature-Timestamp` (the name Grafana's provisioning docs use, which is
the one looked for here) and a stale or replayed request is refused too.

Grafana writes `"version": "1"` where Alertmanager writes "4"; the rest is Alertmanager's
shape plus `orgId`, `title`, `state`, `message` and per alert `values`, `silenceURL`,
`imageURL`. So the body is published as an Alertmanager body (version "4", Grafana's version
kept as `grafanaVersion`): its request id comes from each alert's fingerprint and `startsAt`
as for Alertmanager, and a resolved notification closes the request. Grafana sends no
delivery id; the body's digest stands in, so the same notification sent twice is one event.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from counterpoint.infra.intake.base import (
    Accepted,
    BadPayload,
    BadSignature,
    Clock,
    Headers,
    Ignored,
    Provider,
    from_hex,
    header,
    hmac_digest,
    require_match,
    text_at,
)

SIGNATURE = "X-Grafana-Alerting-Signature"
TIMESTAMP = "X-Grafana-Alerting-Signature-Timestamp"


def verify(secret: bytes, headers: Headers, raw: bytes, clock: Clock) -> None:
    offered = from_hex(SIGNATURE, header(headers, SIGNATURE))
    stamp = headers.get(TIMESTAMP.lower(), "").strip()
    if not stamp:
        require_match(SIGNATURE, hmac_digest(secret, raw), [offered])
        return
    require_match(SIGNATURE, hmac_digest(secret, stamp.encode(), b":", raw), [offered])
    try:
        signed_at = datetime.fromtimestamp(int(stamp), UTC)
    except (ValueError, OverflowError, OSError):
        raise BadSignature(TIMESTAMP, f"{stamp!r} is not Unix seconds") from None
    clock.check(TIMESTAMP, signed_at)


def interpret(_headers: Headers, body: dict[str, Any]) -> Accepted | Ignored:
    status = text_at(body, "status")
    if status not in ("firing", "resolved"):
        raise BadPayload("status", "expected firing or resolved")
    if not isinstance(body.get("alerts"), list):
        raise BadPayload("alerts", "missing: the notification's alerts")
    alertmanager = {**body, "version": "4"}
    if "version" in body:
        alertmanager["grafanaVersion"] = body["version"]
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return Accepted(alertmanager, digest, f"alert.{status}")


PROVIDER = Provider(
    name="grafana", title="Grafana alerting", kind="alert", signature_header=SIGNATURE,
    verify=verify, interpret=interpret,
    setup="Alerting → Contact points → Webhook, URL `.../v1/webhooks/grafana`; under "
          "Optional Webhook settings → HMAC Signature a Secret (also in "
          "COUNTERPOINT_GRAFANA_WEBHOOK_SECRET) and Timestamp Header "
          "`X-Grafana-Alerting-Signature-Timestamp`.")
