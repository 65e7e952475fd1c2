"""The gateway's approval route: `POST /v1/approvals/{approval_id}`.

    {"decision": "approve" | "deny", "reason": "..."}

Who decides is the approver whose token made the call (COUNTERPOINT_APPROVERS), never a field
of the body: a body naming someone (`by`) is refused. The decision is signed with the gateway's
key (kind `person`) and carries the signed request it decides, so the executor can check it.

202 with the published decision; 403 for a token that is not an approver's (or when no
approvers are configured); 404 for an approval id nobody asked for; 409 when it is already
decided (the first decision stands: approved, denied or expired); 400/422 for a bad body (a
denial needs a reason); 503 when the broker cannot be read or does not acknowledge. The
approvals the gateway knows come from its progress reader (gateway_state.RequestIndex.book).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from counterpoint.agents.signing import Signer
from counterpoint.bus.decode import InputLimits
from counterpoint.infra.approvals import (
    ApprovalBook,
    ApprovalError,
    check_decidable,
    make_decision,
    send_decision,
)
from counterpoint.infra.gateway_auth import Principal
from counterpoint.infra.gateway_errors import (
    ApiError,
    FieldProblem,
    documented,
    json_object,
    parse_body,
    problems,
)
from counterpoint.infra.gateway_state import BrokerUnavailable, Publisher, Tracker

GATEWAY_SOURCE = "/counterpoint/gateway"


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: Annotated[str, Field(max_length=2000)] = ""


class DecisionAccepted(BaseModel):
    approval_id: str
    request_id: str
    decision: Literal["approved", "denied"]
    decided_by: str
    event_id: str
    status_url: str


def _problem(status: int, message: str, name: str, what: str) -> ApiError:
    return ApiError(status, message, [FieldProblem(field=name, problem=what)])


def _body(raw: bytes, limits: InputLimits) -> ApprovalBody:
    body = json_object(parse_body(raw, limits), "decision")
    if "by" in body:
        raise _problem(422, "invalid decision", "by", "not accepted: a decision is by the "
                       "approver whose token made the call")
    try:
        return ApprovalBody.model_validate(body)
    except ValidationError as exc:
        raise ApiError(422, "invalid decision", problems(exc)) from exc


def add_approval_routes(app: FastAPI, *, book: ApprovalBook, publisher: Publisher,
                        tracker: Tracker, track: bool,
                        caller: Callable[..., Awaitable[Principal | None]], signer: Signer,
                        limits: InputLimits, approvers: list[str]) -> None:
    def approver(request: Request) -> str:
        principal = getattr(request.state, "principal", None)  # set by the guard
        if not isinstance(principal, Principal) or principal.name is None:
            why = ("this token is not an approver's" if principal is not None else
                   "no approvers are configured (COUNTERPOINT_APPROVERS)" if not approvers else
                   "no token was sent")
            raise _problem(403, f"only an approver may decide: {why}; an approver's token "
                           "(COUNTERPOINT_APPROVERS) decides as that approver",
                           "Authorization", "not an approver")
        return principal.name

    body_schema: dict[str, Any] = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": ApprovalBody.model_json_schema()}}}}

    @app.post("/v1/approvals/{approval_id}", status_code=202, response_model=DecisionAccepted,
              summary="Approve or deny an action waiting for a person, as the approver whose "
              "token makes the call", openapi_extra=body_schema,
              responses=documented(400, 401, 403, 404, 409, 413, 422, 503),
              dependencies=[Depends(caller)])
    async def decide(approval_id: str, request: Request) -> DecisionAccepted:
        by = approver(request)
        body = _body(await request.body(), limits)
        item = book.actions.get(approval_id)
        if item is None:
            if track and not tracker.connected:
                raise _problem(503, "approvals are unavailable: the broker cannot be read; "
                               "retry later", "approval_id", "unreadable")
            raise _problem(404, f"no approval {approval_id!r} is known to this gateway",
                           "approval_id", "unknown")
        try:
            check_decidable(item)
        except ApprovalError as exc:
            raise _problem(409, str(exc), "approval_id", "already decided") from exc
        try:
            decision = make_decision(item, body.decision, by, body.reason, signer)
        except ApprovalError as exc:
            name, _, what = str(exc).partition(": ")
            raise _problem(422, "invalid decision", name, what) from exc
        try:
            event_id = await send_decision(publisher, item, decision, source=GATEWAY_SOURCE)
        except BrokerUnavailable as exc:
            raise _problem(503, f"not published: {exc}; retry later", "approval_id",
                           "not published") from exc
        assert decision.decision != "expired"
        return DecisionAccepted(
            approval_id=approval_id, request_id=item.request_id, decision=decision.decision,
            decided_by=decision.decided_by, event_id=event_id,
            status_url=str(request.url_for("get_request", request_id=item.request_id)))
