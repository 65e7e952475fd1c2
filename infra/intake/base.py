"""What every provider webhook module supplies, and the checks they share.

A provider is one module exposing `PROVIDER`, a `Provider` whose parts do one thing each:

    verify(secret, headers, raw, clock)   the signature, on the raw body, before anything is
                                          parsed; raises BadSignature (the gateway says 401)
    interpret(headers, body)              the parsed body as a ticket or an alert, with the
                                          provider's delivery id: `Accepted`; or `Ignored`
                                          for an event type Counterpoint does not act on

Header names are looked up in lower case (the gateway hands Starlette's case-insensitive
headers; tests hand plain dicts with lower-case keys). Every signature comparison is
`hmac.compare_digest` on the decoded bytes, so neither its length nor its content leaks
through timing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Kind = Literal["ticket", "alert"]
Headers = Mapping[str, str]


class BadSignature(Exception):
    """The request is not provably from the provider: missing, malformed or wrong signature,
    or a signed timestamp too far from now. The message names the header and the problem."""

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"{header}: {problem}")
        self.header, self.problem = header, problem


class BadPayload(Exception):
    """A genuine delivery that lacks what the mapping needs; `field` is a dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class Clock:
    """The time a timestamped signature is checked against, and how far from it may be."""

    now: datetime
    tolerance_s: float

    @classmethod
    def system(cls, tolerance_s: float) -> Clock:
        return cls(datetime.now(UTC), tolerance_s)

    def check(self, header: str, signed_at: datetime) -> None:
        drift = abs((self.now - signed_at).total_seconds())
        if drift > self.tolerance_s:
            raise BadSignature(header, f"signed {drift:,.0f} s away from now; at most "
                               f"{self.tolerance_s:g} s is accepted (a replay, or a clock off)")


@dataclass(frozen=True)
class Accepted:
    """A delivery to publish: `body` is a ticket or alert as the intake topics take it."""

    body: dict[str, Any]
    delivery_id: str  # the provider's id of this delivery: the same on every redelivery
    event_type: str


@dataclass(frozen=True)
class Ignored:
    """A genuine delivery of an event type Counterpoint does not act on."""

    event_type: str
    reason: str


Verify = Callable[[bytes, Headers, bytes, Clock], None]
Interpret = Callable[[Headers, dict[str, Any]], Accepted | Ignored]


@dataclass(frozen=True)
class Provider:
    name: str  # the route's segment, /v1/webhooks/<name>, and COUNTERPOINT_<NAME>_WEBHOOK_SECRET
    title: str
    kind: Kind
    signature_header: str  # checked for presence before the body is read
    verify: Verify
    interpret: Interpret
    setup: str  # how to point the provider here, for the API docs

    @property
    def setting(self) -> str:
        return f"COUNTERPOINT_{self.name.upper()}_WEBHOOK_SECRET"


def header(headers: Headers, name: str) -> str:
    value = headers.get(name.lower(), "").strip()
    if not value:
        raise BadSignature(name, "missing")
    return value


def hmac_digest(secret: bytes, *parts: bytes, algorithm: str = "sha256") -> bytes:
    mac = hmac.new(secret, digestmod=getattr(hashlib, algorithm))
    for part in parts:
        mac.update(part)
    return mac.digest()


def from_hex(name: str, text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadSignature(name, "not a hex digest") from None


def from_base64(name: str, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature(name, "not base64") from None


def require_match(name: str, expected: bytes, offered: list[bytes]) -> None:
    # Every offered signature is compared, so how many there are says nothing of which matched.
    matched = False
    for candidate in offered:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise BadSignature(name, "does not match the body (wrong secret, or the body was "
                           "changed on the way)")


def prefixed_hex(name: str, value: str, algorithms: tuple[str, ...] = ("sha256",)
                 ) -> tuple[str, bytes]:
    """`sha256=<hex>` (GitHub, Jira, WebSub) as (algorithm, digest)."""
    method, sep, digest = value.partition("=")
    if not sep or method.lower() not in algorithms:
        allowed = " or ".join(f"{a}=<hex>" for a in algorithms)
        raise BadSignature(name, f"expected {allowed}")
    return method.lower(), from_hex(name, digest)


def at(body: Any, path: str) -> Any:
    """The value at dotted `path`, or None where any step is missing."""
    for step in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(step)
    return body


def text_at(body: Any, path: str) -> str | None:
    """A non-empty string (numbers become strings), or None."""
    value = at(body, path)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    return None


def required_text(body: Any, path: str) -> str:
    value = text_at(body, path)
    if value is None:
        raise BadPayload(path, "missing or empty")
    return value


def compact(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that have a value: a mapped body carries no nulls for what was not sent."""
    return {k: v for k, v in fields.items() if v not in (None, "", [], {})}
