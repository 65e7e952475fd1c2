"""Who is calling the gateway, decided before any of the body is read, and a bounded body.

`Guard` is an ASGI middleware in front of every route. For /metrics and a path under /v1
(when any credential is configured) it checks the bearer token first and answers 401 without
reading the body; then it refuses a Content-Length above the limit at once (413), and counts
the body as the route reads it: the read that passes the limit raises `BodyTooLarge` (413), so
memory stays bounded by the limit whatever is sent, chunked or not. Provider webhooks
(/v1/webhooks/..., infra/gateway_webhooks.py) authenticate by the provider's signature
instead of the bearer token; the size limit applies to them too.

Credentials: COUNTERPOINT_API_TOKEN (may call every /v1 route but decide nothing), and
COUNTERPOINT_APPROVERS, a mapping of approver names to their tokens (or the SHA-256 of them,
`sha256:<hex>`): an approver's token calls every route too, and its name, never a field of
the request, is who a decision made with it is by. Tokens are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.exceptions import HTTPException as StarletteHTTPException

from counterpoint.agents.json_setting import json_object_setting
from counterpoint.infra.gateway_errors import ROOT, error_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED: Final = "/v1"
METRICS: Final = "/metrics"  # behind the token too (infra/gateway_metrics.py says why)
SIGNED_BY_PROVIDER: Final = "/v1/webhooks/"  # no bearer token: the provider signs instead
_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to: an approver by name, or the shared API token (name None)."""

    name: str | None

    @property
    def approver(self) -> bool:
        return self.name is not None


def parse_approvers(text: str) -> dict[str, bytes]:
    """COUNTERPOINT_APPROVERS: `{"alice": "<token>" | "sha256:<hex>", ...}`, inline or a file's
    path -> name: SHA-256 digest of the token. ValueError names the problem."""
    table = json_object_setting("COUNTERPOINT_APPROVERS", text, "of approver name -> token")
    out: dict[str, bytes] = {}
    for name, token in table.items():
        if not name.strip() or not isinstance(token, str) or not token.strip():
            raise ValueError(f"COUNTERPOINT_APPROVERS: {name!r}: expected a non-empty name "
                             "mapped to a token or to sha256:<64 hex digits>")
        hashed = _HASHED.match(token.strip())
        out[name.strip()] = (bytes.fromhex(hashed.group(1)) if hashed else
                             hashlib.sha256(token.strip().encode()).digest())
    return out


class Credentials:
    def __init__(self, api_token: str | None = None,
                 approvers: Mapping[str, bytes] | None = None) -> None:
        self._api = api_token.encode() if api_token else None
        self._approvers = dict(approvers or {})

    @property
    def required(self) -> bool:
        return self._api is not None or bool(self._approvers)

    @property
    def approvers(self) -> list[str]:
        return sorted(self._approvers)

    def identify(self, token: str) -> Principal | None:
        raw = token.encode()
        digest = hashlib.sha256(raw).digest()
        found: Principal | None = None
        # Every comparison is made, so the time taken does not say which one matched.
        if self._api is not None and hmac.compare_digest(raw, self._api):
            found = Principal(None)
        for name, expected in self._approvers.items():
            if hmac.compare_digest(digest, expected):
                found = Principal(name)
        return found


class BodyTooLarge(StarletteHTTPException):
    """Raised by the body's `receive` once the count passes the limit; an HTTPException, so
    FastAPI passes it through to the gateway's handler (which answers in the error shape)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the body is over {max_bytes:,} bytes, the limit "
                         "(COUNTERPOINT_MAX_MESSAGE_BYTES)")


class Guard:
    def __init__(self, app: ASGIApp, credentials: Credentials, max_bytes: int) -> None:
        self.app, self.credentials, self.max_bytes = app, credentials, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        path: str = scope.get("path", "")
        if (self.credentials.required and not path.startswith(SIGNED_BY_PROVIDER)
                and (path in (PROTECTED, METRICS) or path.startswith(PROTECTED + "/"))):
            principal = await self._authenticate(headers.get("authorization"), send)
            if principal is None:
                return
            scope.setdefault("state", {})["principal"] = principal
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            if not length.isdigit():
                await _respond(send, 400, error_bytes("bad Content-Length header", [
                    ("Content-Length", f"{length[:40]!r} is not a number")]))
            else:
                await self._too_large(send, int(length))
            return
        counted = 0

        async def counting() -> Message:
            nonlocal counted
            message = await receive()
            if message["type"] == "http.request":
                counted += len(message.get("body", b""))
                if counted > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counting, send)

    async def _authenticate(self, header: str | None, send: Send) -> Principal | None:
        scheme, _, token = (header or "").partition(" ")
        if header is None or scheme.lower() != "bearer" or not token.strip():
            await _respond(send, 401, error_bytes(
                "missing bearer token: send `Authorization: Bearer <token>`",
                [("Authorization", "missing")]), [("www-authenticate",
                                                   'Bearer realm="counterpoint"')])
            return None
        principal = self.credentials.identify(token.strip())
        if principal is None:
            await _respond(send, 401, error_bytes("wrong bearer token", [
                ("Authorization", "wrong token")]), [(
                    "www-authenticate", 'Bearer realm="counterpoint", error="invalid_token"')])
        return principal

    async def _too_large(self, send: Send, declared: int) -> None:
        await _respond(send, 413, error_bytes(
            f"the body is {declared:,} bytes, over {self.max_bytes:,} bytes, the limit "
            "(COUNTERPOINT_MAX_MESSAGE_BYTES)", [(ROOT, "too large")]))


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[str, str]] | None = None) -> None:
    # `connection: close`: the rest of a refused body is never read, so the connection ends.
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.encode(), v.encode()) for k, v in headers or []]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
