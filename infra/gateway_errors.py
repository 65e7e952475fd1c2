"""The gateway's one error shape, and reading a JSON body into it.

Every 4xx and 5xx of every route is `{"error": "...", "fields": [{"field", "problem"}, ...]}`:
raised as `ApiError` by a route, or built by `error_response` before a route runs (the guard
in infra/gateway_auth.py, FastAPI's validation and routing errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, Field, ValidationError

from counterpoint.bus.decode import InputLimits, parse_json
from counterpoint.bus.errors import TooDeep

ROOT = "(value)"  # the field name for a problem with the body as a whole, as the CLI says it


class FieldProblem(BaseModel):
    field: str
    problem: str


class ErrorBody(BaseModel):
    error: str
    fields: list[FieldProblem] = Field(default_factory=list)


class ApiError(Exception):
    def __init__(self, status: int, error: str, fields: Sequence[FieldProblem] = (),
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.fields, self.headers = status, error, list(fields), headers


def error_bytes(error: str, fields: Sequence[tuple[str, str]] = ()) -> bytes:
    return orjson.dumps({"error": error, "fields": [{"field": f, "problem": p}
                                                    for f, p in fields]})


def problems(exc: ValidationError, prefix: str = "") -> list[FieldProblem]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        problem = err["msg"]
        if loc == "version" and err["type"] == "missing":
            problem += ' (Alertmanager webhook bodies carry "version": "4")'
        out.append(FieldProblem(field=(prefix + loc) if loc else (prefix.rstrip(".") or ROOT),
                                problem=problem))
    return out


def parse_body(raw: bytes, limits: InputLimits) -> Any:
    """JSON from a body the guard already bounded in size; ApiError 400/422 otherwise."""
    if not raw.strip():
        raise ApiError(400, "the body is empty; expected a JSON object",
                       [FieldProblem(field=ROOT, problem="empty body")])
    try:
        return parse_json(raw, limits)
    except TooDeep as exc:
        raise ApiError(422, "the body nests too deeply",
                       [FieldProblem(field=ROOT, problem=str(exc))]) from exc
    except Exception as exc:  # DecodeError: not JSON, not UTF-8
        raise ApiError(400, "the body is not valid JSON",
                       [FieldProblem(field=ROOT, problem=str(exc))]) from exc


def json_object(body: Any, what: str, prefix: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        got = "null" if body is None else type(body).__name__
        raise ApiError(422, f"invalid {what}",
                       [FieldProblem(field=prefix.rstrip(".") or ROOT,
                                     problem=f"expected a JSON object, got {got}")])
    return body


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the error shape."""
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in codes}


ERRORS: dict[int, str] = {
    400: "not JSON",
    401: "missing or wrong bearer token (checked before the body is read)",
    403: "the token may not do this",
    404: "unknown id or path",
    405: "method not allowed on this path",
    409: "already decided; the first decision stands",
    413: ("body too large (refused while reading, or at once from Content-Length), or more "
          "alerts than COUNTERPOINT_MAX_ALERTS"),
    415: "unsupported media type",
    422: "invalid: every bad field is listed",
    503: "the broker did not acknowledge in time, or cannot be read; retry",
}
