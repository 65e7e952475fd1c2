"""Native webhooks of the systems teams use: one module per provider (see `base.Provider`).

Adding a provider is a module with a `PROVIDER` and a line here; the gateway gives each one
`POST /v1/webhooks/<name>` and reads its secret from COUNTERPOINT_<NAME>_WEBHOOK_SECRET.
"""

from __future__ import annotations

from collections.abc import Mapping

from counterpoint.infra.intake import github, grafana, jira, pagerduty, zendesk
from counterpoint.infra.intake.base import Provider

PROVIDERS: dict[str, Provider] = {p.name: p for p in (
    zendesk.PROVIDER, jira.PROVIDER, github.PROVIDER, pagerduty.PROVIDER, grafana.PROVIDER)}


def configured_secrets(environ: Mapping[str, str]) -> dict[str, bytes]:
    """Each provider's secret, for those whose setting is set and not blank."""
    found = {name: environ.get(p.setting, "").strip() for name, p in PROVIDERS.items()}
    return {name: secret.encode() for name, secret in found.items() if secret}
