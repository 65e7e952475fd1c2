"""The HTTP gateway: tickets, Alertmanager webhooks and CloudEvents in; request status out.

    POST /v1/tickets                 a ticket, as `counterpoint publish ticket` takes it
    POST /v1/alerts/alertmanager     the body Prometheus Alertmanager's webhook receiver sends
    POST /v1/events                  one CloudEvent in structured JSON mode (see `event_kind`)
    GET  /v1/requests/{request_id}   status, the steps done so far, the result, and each
                                     proposed action: decided by whom, what ran
    POST /v1/approvals/{approval_id} approve or deny an action waiting for a person
    POST /v1/webhooks/{provider}     Zendesk, Jira, GitHub, PagerDuty and Grafana webhooks as
                                     those systems send them (see gateway_webhooks.py)
    GET  /healthz, /openapi.json, /docs   always open

Bodies are validated by the same models as the CLI; what is published is the body exactly as
received (extra fields kept). Every problem comes back as 4xx with
`{"error": "...", "fields": [{"field": "alerts.0.labels", "problem": "Field required"}, ...]}`,
every bad field listed; so do unknown paths (404) and methods (405). A broker that does not
acknowledge within the deadline gives 503. With COUNTERPOINT_API_TOKEN or COUNTERPOINT_APPROVERS
set, /v1/* needs `Authorization: Bearer <token>` (compared in constant time; 401 otherwise),
checked before any of the body is read; a body over COUNTERPOINT_MAX_MESSAGE_BYTES is refused
(413) as soon as its Content-Length or its count says so (infra/gateway_auth.py). Deciding an
approval needs an approver's token: the decision is by that approver. The provider webhooks
authenticate by their signature instead of the bearer token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.signing import Keyring
from counterpoint.bus.decode import InputLimits
from counterpoint.bus.kafka import KafkaConfig
from counterpoint.infra.approvals import ActionView, ApprovalBook
from counterpoint.infra.gateway_approvals import add_approval_routes
from counterpoint.infra.gateway_auth import BodyTooLarge, Credentials, Guard, Principal
from counterpoint.infra.gateway_errors import (
    ROOT,
    ApiError,
    ErrorBody,
    FieldProblem,
    documented,
    json_object,
    parse_body,
    problems,
)
from counterpoint.infra.gateway_metrics import add_metrics_route
from counterpoint.infra.gateway_state import (
    BrokerUnavailable,
    Publisher,
    RequestIndex,
    Status,
    Tracker,
    status_of,
    steps_of,
)
from counterpoint.infra.publishing import TOPICS, Kind, send_event
from counterpoint.infra.webhook_status import DeliveryInfo
from counterpoint.schemas.alert_cap import DEFAULT_MAX_ALERTS, over_alert_cap
from counterpoint.schemas.envelope import new_event_id
from counterpoint.schemas.events import (
    AlertmanagerWebhook,
    Resolution,
    Result,
    SimpleAlert,
    Ticket,
)

GATEWAY_SOURCE = "/counterpoint/gateway"
BEARER = HTTPBearer(auto_error=False, description="COUNTERPOINT_API_TOKEN or an approver's "
                    "token (COUNTERPOINT_APPROVERS), when either is set")


# --- response bodies ------------------------------------------------------------------------


class Accepted(BaseModel):
    request_id: str
    source_id: str
    topic: str
    partition: int
    offset: int
    status_url: str


class Step(BaseModel):
    step: Literal["triage", "investigation", "synthesis", "resolution"]
    done: bool
    agent: str | None = None
    task_id: str | None = None
    skill: str | None = None
    focus: str | None = None
    summary: str | None = None


class RequestStatus(BaseModel):
    request_id: str
    status: Status
    steps: list[Step]
    result: Result | None
    actions: list[ActionView] = Field(default_factory=list)
    resolution: Resolution | None = None  # set when the alert resolved: the request is closed
    delivery: DeliveryInfo | None = None  # the result's webhook delivery, when it has one


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 event in structured JSON mode; extension attributes are allowed."""

    model_config = ConfigDict(extra="allow")

    specversion: Literal["1.0"]
    id: Annotated[str, Field(min_length=1, max_length=200)]
    source: Annotated[str, Field(min_length=1)]
    type: Annotated[str, Field(min_length=1)]
    datacontenttype: str | None = None
    dataschema: str | None = None
    subject: str | None = None
    time: datetime | None = None
    counterpointkind: Literal["ticket", "alert"] | None = None
    data: Any = Field(description="the ticket or the alert, as JSON")


# --- validation -----------------------------------------------------------------------------


def _validate(kind: Kind, body: dict[str, Any], *, alertmanager_only: bool = False,
              prefix: str = "") -> Any:
    """The event `body` is, by the models the CLI uses; ApiError(422) naming every bad field."""
    if kind == "ticket":
        model: type[BaseModel] = Ticket
    elif alertmanager_only or "alerts" in body or "groupKey" in body or "version" in body:
        model = AlertmanagerWebhook  # report the errors of the shape the input was meant to be
    else:
        model = SimpleAlert
    try:
        model.model_validate(body)
        return TOPICS[kind].adapter.validate_python(body)
    except ValidationError as exc:
        what = "Alertmanager webhook body" if model is AlertmanagerWebhook else kind
        raise ApiError(422, f"invalid {what}", problems(exc, prefix)) from exc


def event_kind(event: CloudEvent) -> Kind:
    """Ticket or alert: the `counterpointkind` extension when present, else the type.

    The type's dot-separated parts decide: one of them `ticket` (e.g. `com.example.ticket`,
    `counterpoint.ticket.received`) or one of them `alert` (`io.prometheus.alert.firing`).
    """
    if event.counterpointkind is not None:
        return event.counterpointkind
    parts = set(event.type.lower().split("."))
    kinds = [k for k in ("ticket", "alert") if k in parts]
    if len(kinds) != 1:
        raise ApiError(422, "invalid CloudEvent", [FieldProblem(
            field="type", problem=f"{event.type!r} says neither ticket nor alert: one of its "
            "dot-separated parts must be `ticket` or `alert` (or set the `counterpointkind` "
            "extension to ticket or alert)")])
    return kinds[0]


def _check_cloudevent(body: dict[str, Any]) -> CloudEvent:
    found: list[FieldProblem] = []
    if "data_base64" in body:
        found.append(FieldProblem(field="data_base64", problem="binary data is not "
                                     "accepted; send the ticket or alert as JSON in `data`"))
    try:
        event = CloudEvent.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid CloudEvent", found + problems(exc)) from exc
    ctype = (event.datacontenttype or "application/json").split(";")[0].strip().lower()
    if not (ctype in ("application/json", "text/json") or ctype.endswith("+json")):
        found.append(FieldProblem(field="datacontenttype",
                                     problem=f"{ctype!r} is not JSON; data must be JSON"))
    if found:
        raise ApiError(422, "invalid CloudEvent", found)
    return event


# --- the app --------------------------------------------------------------------------------


def create_app(config: KafkaConfig, *, token: str | None = None,
               approvers: Mapping[str, bytes] | None = None, keys: Keyring | None = None,
               policy: ApprovalPolicy | None = None, limits: InputLimits | None = None,
               publish_timeout_s: float = 5.0, track: bool = True,
               max_tracked: int = 100_000,
               webhook_secrets: Mapping[str, bytes] | None = None,
               signature_tolerance_s: float = 300.0,
               max_alerts: int = DEFAULT_MAX_ALERTS) -> FastAPI:
    """The gateway. `token` (COUNTERPOINT_API_TOKEN) and `approvers` (name -> SHA-256 of the
    token, COUNTERPOINT_APPROVERS): with neither, no authentication, and nobody can approve.
    `keys`: the gateway's signing key and the trust approval events are checked against.
    `webhook_secrets` holds the secret of each provider whose webhooks are accepted (others
    answer 503)."""
    limits = limits or InputLimits()
    keys = keys or Keyring.ephemeral()
    policy = policy or ApprovalPolicy()
    credentials = Credentials(token, approvers)
    publisher = Publisher(config, publish_timeout_s)
    index = RequestIndex(max_tracked, ApprovalBook(keys.trust, policy))
    tracker = Tracker(config, index)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if track:
            tracker.start()
        try:
            yield
        finally:
            await tracker.stop()
            await publisher.close()

    app = FastAPI(title="Counterpoint gateway", version="1", lifespan=lifespan,
                  description=__doc__)
    app.state.index, app.state.tracker, app.state.publisher = index, tracker, publisher
    # Before routing and before any of the body is read: authentication, then the size limit.
    app.add_middleware(Guard, credentials=credentials, max_bytes=limits.max_bytes)
    add_metrics_route(app)

    async def caller(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Principal | None:
        """Who the guard authenticated (None: no credentials are configured); `_bearer` only
        puts the scheme in the OpenAPI document."""
        found = getattr(request.state, "principal", None)
        return found if isinstance(found, Principal) else None

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        body = ErrorBody(error=exc.error, fields=exc.fields)
        return JSONResponse(body.model_dump(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [FieldProblem(field=".".join(str(p) for p in e["loc"]), problem=e["msg"])
                  for e in exc.errors()]
        return JSONResponse(ErrorBody(error="invalid request", fields=fields).model_dump(),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing's own errors (404 unknown path, 405 method) and the guard's 413 raised while
        # a route reads the body, in the same shape as the rest.
        if isinstance(exc, BodyTooLarge):
            body = ErrorBody(error=exc.detail, fields=[FieldProblem(field=ROOT,
                                                                    problem="too large")])
        else:
            body = ErrorBody(error=f"{exc.detail}: {request.method} {request.url.path}",
                             fields=[FieldProblem(field="path", problem=str(exc.detail))])
        return JSONResponse(body.model_dump(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def publish(request: Request, kind: Kind, raw: bytes, event: Any, *,
                      event_id: str, source: str, ce_type: str | None = None,
                      time: datetime | None = None, alerts_field: str = "alerts",
                      ) -> JSONResponse:
        if (too_many := over_alert_cap(event, max_alerts)) is not None:
            raise ApiError(413, too_many, [FieldProblem(field=alerts_field,
                                                        problem=f"more than {max_alerts:,}")])
        try:
            sent = await send_event(publisher, kind, raw, event, source=source,
                                    event_id=event_id, ce_type=ce_type, time=time)
        except BrokerUnavailable as exc:
            raise ApiError(503, f"not published: {exc}; retry later") from exc
        rid = sent.request_id  # an Alertmanager alert's own id, not the event's (see identity)
        index.accepted(rid, sent.source_id)
        receipt = Accepted(request_id=rid, source_id=sent.source_id, topic=sent.topic,
                           partition=sent.partition, offset=sent.offset,
                           status_url=str(request.url_for("get_request", request_id=rid)))
        return JSONResponse(receipt.model_dump(), status_code=202,
                            headers={"Location": receipt.status_url})

    errors = documented(400, 401, 413, 422, 503)
    secured = [Depends(caller)]

    @app.post("/v1/tickets", status_code=202, response_model=Accepted, responses=errors,
              dependencies=secured, openapi_extra=_body("Ticket"),
              summary="Publish a ticket to intake.tickets")
    async def post_ticket(request: Request) -> JSONResponse:
        raw = await request.body()
        body = json_object(parse_body(raw, limits), "ticket")
        event = _validate("ticket", body)
        return await publish(request, "ticket", raw, event, event_id=new_event_id(),
                             source=GATEWAY_SOURCE)

    @app.post("/v1/alerts/alertmanager", status_code=202, response_model=Accepted,
              responses=errors, dependencies=secured, openapi_extra=_body("AlertmanagerWebhook"),
              summary="Publish an Alertmanager webhook body (version 4) to intake.alerts")
    async def post_alertmanager(request: Request) -> JSONResponse:
        raw = await request.body()
        body = json_object(parse_body(raw, limits), "Alertmanager webhook body")
        event = _validate("alert", body, alertmanager_only=True)
        return await publish(request, "alert", raw, event, event_id=new_event_id(),
                             source=GATEWAY_SOURCE + "/alertmanager")

    @app.post("/v1/events", status_code=202, response_model=Accepted,
              responses={**errors, **documented(415)},
              dependencies=secured, openapi_extra=_body("CloudEvent"),
              summary="Publish a CloudEvent (structured JSON) carrying a ticket or an alert",
              description=(event_kind.__doc__ or "") + "\nThe request id derives from the "
              "event's `source` and `id` together, the pair CloudEvents makes unique (an "
              "Alertmanager body's from its alert instead): posting the same event again is the "
              "same request, and another source's event with the same id is another request.")
    async def post_event(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "").lower()
        if "cloudevents-batch" in ctype:
            raise ApiError(415, "batched CloudEvents are not accepted; post one event at a time",
                           [FieldProblem(field="Content-Type", problem=ctype)])
        raw = await request.body()
        ce = _check_cloudevent(json_object(parse_body(raw, limits), "CloudEvent"))
        kind = event_kind(ce)
        data = json_object(ce.data, f"{kind} in the CloudEvent's data", "data.")
        event = _validate(kind, data, prefix="data.")
        return await publish(request, kind, orjson.dumps(data), event, event_id=ce.id,
                             source=ce.source, ce_type=ce.type, time=ce.time,
                             alerts_field="data.alerts")

    @app.get("/v1/requests/{request_id}", response_model=RequestStatus, name="get_request",
             dependencies=secured, summary="A request's status, steps so far and result",
             responses={**errors, **documented(404)})
    async def get_request(request_id: str) -> RequestStatus:
        progress = index.get(request_id)
        if progress is None:
            if track and not tracker.connected:
                raise ApiError(503, "progress is unavailable: the broker cannot be read; "
                               "retry later")
            raise ApiError(404, f"no request {request_id!r} is known to this gateway",
                           [FieldProblem(field="request_id", problem="unknown")])
        return RequestStatus(request_id=request_id, status=status_of(progress),
                             steps=[Step(**s) for s in steps_of(progress)],
                             result=progress.result, resolution=progress.resolution,
                             delivery=progress.delivery,
                             actions=[ActionView.of(a) for a in index.book.for_request(request_id)])

    add_approval_routes(app, book=index.book, publisher=publisher, tracker=tracker, track=track,
                        caller=caller, signer=keys.signer("gateway"), limits=limits,
                        approvers=credentials.approvers)

    from counterpoint.infra.gateway_webhooks import add_webhook_routes

    add_webhook_routes(app, secrets=webhook_secrets or {}, publish=publish, limits=limits,
                       tolerance_s=signature_tolerance_s, errors=errors)

    @app.get("/healthz", summary="Liveness, and whether the progress reader reaches the broker")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "broker_readable": tracker.connected if track else None,
                "requests_tracked": len(index)}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Ticket, AlertmanagerWebhook, CloudEvent):
                defs = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(defs.pop("$defs", {}))
                components[model.__name__] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _body(name: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{name}"}
    content = {"application/json": {"schema": ref}}
    if name == "CloudEvent":
        content["application/cloudevents+json"] = {"schema": ref}
    return {"requestBody": {"required": True, "content": content}}
