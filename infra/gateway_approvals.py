"""The gateway's approval route: `POST /v1/approvals/{approval_id}`.

    {"decision": "approve" | "deny", "reason": "...", "by": "..."}

202 with the published decision; 404 for an approval id nobody asked for; 409 when it is
already decided (the first decision stands: approved, denied or expired); 422 for a bad body
(a denial needs a reason); 503 when the broker cannot be read or does not acknowledge. The
approvals the gateway knows come from its progress reader (gateway_state.RequestIndex.book).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from counterpoint.infra.approvals import (
    ApprovalBook,
    ApprovalError,
    check_decidable,
    make_decision,
    send_decision,
)
from counterpoint.infra.gateway_state import BrokerUnavailable, Publisher, Tracker

GATEWAY_SOURCE = "/counterpoint/gateway"


class ApprovalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]
    reason: Annotated[str, Field(max_length=2000)] = ""
    by: Annotated[str, Field(min_length=1, max_length=200)] = "gateway"


class DecisionAccepted(BaseModel):
    approval_id: str
    request_id: str
    decision: Literal["approved", "denied"]
    decided_by: str
    event_id: str
    status_url: str


def add_approval_routes(app: FastAPI, *, book: ApprovalBook, publisher: Publisher,
                        tracker: Tracker, track: bool, secured: Sequence[Any],
                        errors: dict[int | str, dict[str, Any]], api_error: Any,
                        field_problem: Any) -> None:
    """`api_error(status, message, [field_problem(field=, problem=)])` builds the gateway's
    error responses, so this route answers in the same shape as every other."""

    def problem(status: int, message: str, name: str, what: str) -> Exception:
        exc: Exception = api_error(status, message, [field_problem(field=name, problem=what)])
        return exc

    @app.post("/v1/approvals/{approval_id}", status_code=202, response_model=DecisionAccepted,
              dependencies=list(secured), summary="Approve or deny an action waiting for a "
              "person", responses={**{k: v for k, v in errors.items() if k in (401, 422, 503)},
                                   404: {"model": errors[422]["model"],
                                         "description": "unknown approval id"},
                                   409: {"model": errors[422]["model"],
                                         "description": "already decided; the first decision "
                                         "stands"}})
    async def decide(approval_id: str, body: ApprovalBody, request: Request) -> DecisionAccepted:
        item = book.actions.get(approval_id)
        if item is None:
            if track and not tracker.connected:
                raise problem(503, "approvals are unavailable: the broker cannot be read; "
                              "retry later", "approval_id", "unreadable")
            raise problem(404, f"no approval {approval_id!r} is known to this gateway",
                          "approval_id", "unknown")
        try:
            check_decidable(item)
        except ApprovalError as exc:
            raise problem(409, str(exc), "approval_id", "already decided") from exc
        try:
            decision = make_decision(item, body.decision, body.by, body.reason)
        except ApprovalError as exc:
            name, _, what = str(exc).partition(": ")
            raise problem(422, "invalid decision", name, what) from exc
        try:
            event_id = await send_decision(publisher, item, decision, source=GATEWAY_SOURCE)
        except BrokerUnavailable as exc:
            raise problem(503, f"not published: {exc}; retry later", "approval_id",
                          "not published") from exc
        assert decision.decision != "expired"
        return DecisionAccepted(
            approval_id=approval_id, request_id=item.request_id, decision=decision.decision,
            decided_by=decision.decided_by, event_id=event_id,
            status_url=str(request.url_for("get_request", request_id=item.request_id)))
