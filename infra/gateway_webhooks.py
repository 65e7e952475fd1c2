"""The gateway's provider routes: `POST /v1/webhooks/<provider>`, one per module in
counterpoint.infra.intake (zendesk, jira, github, pagerduty, grafana).

These authenticate by the provider's signature, not by the bearer token, and refuse as early
as they can: a provider with no secret configured answers 503 naming the setting, and a
request without the signature header 401, before the body is read; the body is read up to
COUNTERPOINT_MAX_MESSAGE_BYTES (413 past it: the gateway's guard, infra/gateway_auth.py) and
its signature checked on the raw bytes (401) before it is parsed. A genuine delivery of an
event type Counterpoint does not act on answers 202 with `"ignored": true` and the reason;
nothing is published. Otherwise the mapped ticket or alert is published like any other (202 +
receipt), its event id derived from the provider's delivery id, so a redelivered webhook is
the same request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from counterpoint.bus.decode import InputLimits
from counterpoint.infra.gateway import _validate
from counterpoint.infra.gateway_errors import ApiError, FieldProblem, json_object, parse_body
from counterpoint.infra.intake import PROVIDERS
from counterpoint.infra.intake.base import Accepted, BadPayload, BadSignature, Clock, Provider
from counterpoint.schemas.envelope import derive_event_id

GATEWAY_SOURCE = "/counterpoint/gateway/webhooks"

# publish(request, kind, raw, event, event_id=..., source=..., alerts_field=...) -> the 202
# receipt (or 413 for an Alertmanager body over COUNTERPOINT_MAX_ALERTS)
Publish = Callable[..., Awaitable[JSONResponse]]


class WebhookIgnored(BaseModel):
    ignored: Literal[True] = True
    provider: str
    event_type: str
    reason: str


def add_webhook_routes(app: FastAPI, *, secrets: Mapping[str, bytes], publish: Publish,
                       limits: InputLimits, tolerance_s: float,
                       errors: dict[int | str, dict[str, Any]]) -> None:
    responses: dict[int | str, dict[str, Any]] = {
        **{code: errors[code] for code in (400, 413, 422)},
        401: {"model": errors[401]["model"],
              "description": "missing or wrong signature, or one signed too long ago"},
        503: {"model": errors[503]["model"],
              "description": "this provider's secret is not configured, or the broker did not "
                             "acknowledge in time; nothing was published"},
    }
    for provider in PROVIDERS.values():
        app.add_api_route(
            f"/v1/webhooks/{provider.name}",
            _handler(provider, secrets.get(provider.name), publish, limits, tolerance_s),
            methods=["POST"], status_code=202, response_model=None, responses={
                202: {"description": "published (a receipt), or ignored (`ignored: true`)"},
                **responses},
            summary=f"{provider.title} webhook (signed; no bearer token)",
            description=f"{provider.setup}\n\nSigned by `{provider.signature_header}` with "
                        f"{provider.setting}.",
            name=f"webhook_{provider.name}", tags=["provider webhooks"])


def _handler(provider: Provider, secret: bytes | None, publish: Publish,
             limits: InputLimits, tolerance_s: float
             ) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def receive(request: Request) -> JSONResponse:
        if secret is None:
            raise ApiError(503, f"{provider.title} webhooks are off on this gateway: "
                           f"{provider.setting} is not set, so no delivery can be verified; "
                           "nothing was published",
                           [FieldProblem(field=provider.setting, problem="not set")])
        if not request.headers.get(provider.signature_header):
            raise _unauthorized(BadSignature(provider.signature_header, "missing"))
        raw = await request.body()  # bounded by the gateway's guard (413 past the limit)
        try:
            provider.verify(secret, request.headers, raw, Clock.system(tolerance_s))
        except BadSignature as exc:
            raise _unauthorized(exc) from exc
        body = json_object(parse_body(raw, limits), f"{provider.title} webhook body")
        try:
            outcome = provider.interpret(request.headers, body)
        except BadPayload as exc:
            raise ApiError(422, f"invalid {provider.title} webhook body",
                           [FieldProblem(field=exc.field, problem=exc.problem)]) from exc
        if not isinstance(outcome, Accepted):
            ignored = WebhookIgnored(provider=provider.name, event_type=outcome.event_type,
                                     reason=outcome.reason)
            return JSONResponse(ignored.model_dump(), status_code=202)
        # What the delivery became fails the intake model only when it is out of bounds
        # (a 100,000-character body): named as the ticket's or alert's field.
        event = _validate(provider.kind, outcome.body, prefix=f"{provider.kind}.")
        return await publish(request, provider.kind, orjson.dumps(outcome.body), event,
                             event_id=derive_event_id("webhook", provider.name,
                                                      outcome.delivery_id),
                             source=f"{GATEWAY_SOURCE}/{provider.name}",
                             alerts_field=f"{provider.kind}.alerts")

    receive.__name__ = f"webhook_{provider.name}"
    return receive


def _unauthorized(exc: BadSignature) -> ApiError:
    return ApiError(401, f"not accepted as a signed delivery: {exc}",
                    [FieldProblem(field=exc.header, problem=exc.problem)])
