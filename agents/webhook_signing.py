"""HMAC-SHA256 signatures on webhook deliveries, and their check on the receiving side.

The signature covers the timestamp and the body, joined by a dot, so a captured delivery
cannot be replayed later with a new timestamp:

    X-Counterpoint-Timestamp: 1763745623
    X-Counterpoint-Signature: sha256=<hex HMAC-SHA256(secret, b"1763745623." + body)>

A receiver recomputes the HMAC over the exact bytes it received, compares in constant time
(`verify` does both) and rejects timestamps too far from its own clock.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final

SIGNATURE_HEADER: Final = "X-Counterpoint-Signature"
TIMESTAMP_HEADER: Final = "X-Counterpoint-Timestamp"
DELIVERY_HEADER: Final = "X-Counterpoint-Delivery"  # the result's event id: dedupe on it
REQUEST_HEADER: Final = "X-Counterpoint-Request-Id"
SCHEME: Final = "sha256="
DEFAULT_TOLERANCE_S: Final = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return SCHEME + digest.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *,
           tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> bool:
    """True when `signature` is ours for this timestamp and body, and the timestamp is fresh."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, sent, body).encode(), signature.encode())
