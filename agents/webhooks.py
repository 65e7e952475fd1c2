"""Webhooks: POSTs each final result to the URL its request or its source asked for.

Consumes: synthesis.results (Result)
Emits:    webhooks.deliveries (WebhookDelivery) — one per result a receiver acknowledged (2xx)

Where a result goes: the request's own `callback_url` (a field of the ticket or alert), else
the first of COUNTERPOINT_WEBHOOKS' entries for the request's CloudEvents source (e.g.
`/counterpoint/gateway/alertmanager`), its kind (`ticket` or `alert`), or `*`. A result with
none of these is not delivered anywhere but the topic.

Each POST carries the result JSON, signed (agents/webhook_signing.py) when
COUNTERPOINT_WEBHOOK_SECRET is set, with the result's event id as the delivery id, so a
receiver can drop the duplicates that at-least-once delivery brings. A failure that may pass
(no connection, a timeout, 5xx, 408, 425, 429) is raised as retriable: the bus tries again with
exponential backoff in this request's own task, bounded by COUNTERPOINT_RETRY_MAX_ATTEMPTS /
_MAX_SECONDS, and then dead-letters the result with the last error (`dlq.agent` = webhooks),
which the gateway's request record shows as a failed delivery. Another 4xx is dead-lettered at
once: sending the same body again will not change the answer.

A callback URL comes from a publisher, so it must pass the egress policy first
(agents/webhook_egress.py: public addresses only unless configured, checked again at connect
time); a refused one is dead-lettered as `webhook-refused` without a connection attempt. What
a receiver answered never travels back: errors name the status code, never the body. URLs are
logged and recorded without credentials or query string.
"""

from __future__ import annotations

import http
import logging
import ssl
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from counterpoint.agents import metrics
from counterpoint.agents.context import AgentContext
from counterpoint.agents.webhook_egress import (
    EgressPolicy,
    WebhookRefused,
    parse_hosts,
    parse_networks,
)
from counterpoint.agents.webhook_signing import (
    DELIVERY_HEADER,
    REQUEST_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
)
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.errors import CounterpointError, TransientError, reason_of
from counterpoint.schemas.events import Result, WebhookDelivery
from counterpoint.topics.registry import SYNTHESIS_RESULTS, WEBHOOK_DELIVERIES, Topic

EMITS: tuple[Topic[Any], ...] = (WEBHOOK_DELIVERIES,)

RETRIABLE_STATUS: Final = frozenset({408, 425, 429})
ATTEMPTS_REMEMBERED: Final = 10_000
OUTCOME: Final = "counterpoint.webhook.outcome"

log = logging.getLogger(__name__)


class WebhookFailed(TransientError):
    """The receiver could not be reached or had a passing problem; trying again may work."""

    reason = "webhook-failed"


class WebhookRejected(CounterpointError):
    """The receiver refused the delivery (4xx): the same body would be refused again."""

    reason = "webhook-rejected"


def target_for(result: Result, targets: Mapping[str, str]) -> str | None:
    if result.callback_url:
        return result.callback_url
    kind = "ticket" if result.kind == "reply" else "alert"
    for key in (result.origin, kind, "*"):
        if key and key in targets:
            return targets[key]
    return None


def shown(url: str) -> str:
    """The URL without credentials or query string, which may hold a receiver's secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def delivery_headers(result_id: str, request_id: str, body: bytes, secret: str | None,
                     timestamp: int) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "counterpoint-webhooks/1",
               DELIVERY_HEADER: result_id, REQUEST_HEADER: request_id,
               TIMESTAMP_HEADER: str(timestamp)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return headers


def status_text(code: int) -> str:
    """`HTTP 404 Not Found`: the standard phrase, not the receiver's, which is its own text."""
    try:
        return f"HTTP {code} {http.HTTPStatus(code).phrase}"
    except ValueError:
        return f"HTTP {code}"


def failure_text(exc: Exception) -> str:
    """The error's class, and its message only where that cannot quote what the other end
    sent: a protocol error's message may carry the first bytes a (non-HTTP) service answered."""
    if isinstance(exc, httpx.ConnectError | httpx.TimeoutException | OSError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


class WebhookSettings(BaseModel):
    """COUNTERPOINT_WEBHOOKS, _WEBHOOK_SECRET, _WEBHOOK_TIMEOUT_S, _WEBHOOK_HOSTS and
    _WEBHOOK_NETWORKS, or this agent's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    webhooks: dict[str, str] = Field(default_factory=dict)  # source or kind -> URL
    webhook_secret: str | None = None
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    # Where deliveries may connect (agents/webhook_egress.py): host names (empty = any) and
    # the non-public networks allowed (empty = public addresses only).
    webhook_hosts: str = ""
    webhook_networks: str = ""

    @field_validator("webhook_networks")
    @classmethod
    def _networks(cls, v: str) -> str:
        parse_networks(v)  # a bad network fails at start-up, naming the entry
        return v

    def egress(self) -> EgressPolicy:
        return EgressPolicy(hosts=parse_hosts(self.webhook_hosts),
                            networks=parse_networks(self.webhook_networks))


def build(ctx: AgentContext, egress: EgressPolicy | None = None) -> Agent:
    """The agent; `egress` (where deliveries may connect) defaults to its settings'."""
    settings = ctx.config(WebhookSettings)
    agent = Agent(ctx.name or "webhooks", emits=EMITS)
    targets = dict(settings.webhooks)
    egress = (egress or settings.egress()).allowing_hosts_of(targets.values())
    secret = settings.webhook_secret
    if not secret:
        log.warning("COUNTERPOINT_WEBHOOK_SECRET is not set: webhook deliveries are unsigned")
    # httpx logs every request with its full URL, credentials and query included; this agent
    # logs its own line instead.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    attempts: OrderedDict[str, int] = OrderedDict()  # result id -> tries so far, this process
    # Built once, at the first POST: making a TLS context is the costly part of a client
    # (~25 ms of CPU, paid at start by every process before, though most deliver nothing).
    # A client per POST keeps nothing open between deliveries (the agent has no shutdown
    # hook to close one).
    tls: list[ssl.SSLContext] = []
    counted = {metrics.AGENT_ATTR: agent.name}

    async def post(url: str, body: bytes, headers: dict[str, str], where: str,
                   attempt: int) -> int:
        """One POST; its status code when the receiver took it, else the failure raised."""
        try:
            await egress.check(url, settings.webhook_timeout_s)
            if not tls:
                tls.append(ssl.create_default_context())
            # The answer's body is never read: nothing a receiver says may travel back.
            async with (egress.client(timeout_s=settings.webhook_timeout_s, tls=tls[0]) as client,
                        client.stream("POST", url, content=body, headers=headers) as response):
                code = response.status_code
        except WebhookRefused as exc:
            raise WebhookRefused(f"POST {where} refused: {exc}") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise WebhookFailed(f"POST {where} (attempt {attempt}): "
                                f"{failure_text(exc)}") from exc
        log.info("POST %s (attempt %d): %s", where, attempt, status_text(code))
        if code >= 500 or code in RETRIABLE_STATUS:
            raise WebhookFailed(f"POST {where} (attempt {attempt}): {status_text(code)}")
        if code >= 300:
            raise WebhookRejected(f"POST {where} (attempt {attempt}): {status_text(code)}")
        return code

    @agent.handles(SYNTHESIS_RESULTS)
    async def on_result(event: Incoming[Result]) -> list[Emit]:
        result = event.data
        url = target_for(result, targets)
        if url is None:
            return []
        result_id = event.envelope.id
        attempt = attempts[result_id] = attempts.get(result_id, 0) + 1
        while len(attempts) > ATTEMPTS_REMEMBERED:
            attempts.popitem(last=False)
        body = orjson.dumps(result.model_dump(mode="json"))
        headers = delivery_headers(result_id, result.request_id, body, secret, int(time.time()))
        where = shown(url)
        try:
            code = await post(url, body, headers, where, attempt)
        except Exception as exc:  # counted by its dead-letter reason: webhook-failed, ...
            metrics.webhook_deliveries.add(1, {**counted, OUTCOME: reason_of(exc)})
            raise
        metrics.webhook_deliveries.add(1, {**counted, OUTCOME: "delivered"})
        attempts.pop(result_id, None)
        delivered = WebhookDelivery(request_id=result.request_id, result_id=result_id,
                                    url=where, attempts=attempt, status_code=code,
                                    delivered_at=datetime.now(UTC))
        return [Emit(WEBHOOK_DELIVERIES, delivered, key=result.request_id, tag="delivered")]

    return agent
