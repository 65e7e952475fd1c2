"""How many alerts one Alertmanager notification may carry (COUNTERPOINT_MAX_ALERTS).

Each alert of a notification costs triage work, and a post of 10,000 resolved alerts used to
make 10,000 results. A notification over the cap is refused whole: a 413 at the gateway, an
error at the CLI and the SDK, a dead letter (`too-many-alerts`) on `intake.alerts`.
Alertmanager can keep its notifications under the cap itself with `max_alerts` in the
receiver's `webhook_configs` (it then sends the first N and counts the rest in
`truncatedAlerts`).
"""

from __future__ import annotations

from typing import Any, Final

from counterpoint.schemas.events import AlertmanagerWebhook

DEFAULT_MAX_ALERTS: Final = 1_000


def over_alert_cap(event: Any, cap: int) -> str | None:
    """Why `event` carries too many alerts, or None when it does not (or is no notification)."""
    if not isinstance(event, AlertmanagerWebhook) or len(event.alerts) <= cap:
        return None
    return (f"the notification carries {len(event.alerts):,} alerts; the limit is {cap:,} "
            "(COUNTERPOINT_MAX_ALERTS; Alertmanager's `max_alerts` in webhook_configs keeps "
            "notifications under it)")
