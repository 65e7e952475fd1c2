"""Request ids that come from what an alert is, so its firing and resolved notifications meet.

Alertmanager sends a webhook when an alert group starts firing and again (with
`send_resolved`) when it resolves; the two may reach different gateway processes, or come
straight from a Kafka client. Both carry the alert's `fingerprint` (a hash of its labels) and
its `startsAt`, which Alertmanager keeps for the whole firing episode. The request id is
derived from those two, so every publisher and triage agree on it without sharing state, and
an alert that fires again later (a new `startsAt`) is a new request.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import orjson

from counterpoint.schemas.envelope import derive_event_id
from counterpoint.schemas.events import AlertmanagerAlert, AlertmanagerWebhook


def alert_identity(alert: AlertmanagerAlert) -> str:
    """The fingerprint, or (for hand-written bodies without one) the sorted labels."""
    if alert.fingerprint:
        return alert.fingerprint
    return "labels:" + orjson.dumps(alert.labels, option=orjson.OPT_SORT_KEYS).decode()


def alert_request_id(alert: AlertmanagerAlert) -> str:
    # Milliseconds: Alertmanager's webhook writes nanoseconds, its API milliseconds.
    started = (alert.startsAt.astimezone(UTC).isoformat(timespec="milliseconds")
               if alert.startsAt is not None else "")
    return derive_event_id("alertmanager", alert_identity(alert), started)


def lead_alert(webhook: AlertmanagerWebhook) -> AlertmanagerAlert:
    """The alert a notification's investigation is about: its first firing alert."""
    firing = firing_alerts(webhook)
    return firing[0] if firing else webhook.alerts[0]


def firing_alerts(webhook: AlertmanagerWebhook) -> list[AlertmanagerAlert]:
    if webhook.status == "resolved":
        return []  # the group as a whole resolved, whatever an alert's own field says
    return [a for a in webhook.alerts if a.status == "firing"]


def resolved_alerts(webhook: AlertmanagerWebhook) -> list[AlertmanagerAlert]:
    if webhook.status == "resolved":
        return list(webhook.alerts)
    return [a for a in webhook.alerts if a.status == "resolved"]


def request_id_for(event: Any, default: str) -> str:
    """The request id an intake event starts (or closes): derived for Alertmanager bodies,
    `default` (what the event's CloudEvents source and id give, `scoped_id`) for the rest."""
    if isinstance(event, AlertmanagerWebhook):
        return alert_request_id(lead_alert(event))
    return default
