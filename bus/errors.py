"""One root error whose instances say whether trying again can help.

Retry-or-dead-letter reads `retriable`, not a list of exception classes (the aiokafka errors
module does the same).
"""

from __future__ import annotations


class CounterpointError(Exception):
    retriable: bool = False
    # A short machine-readable reason, written to the dead-letter headers.
    reason: str = "error"


class DecodeError(CounterpointError):
    """Bytes that cannot become an event: not JSON, not UTF-8, not a valid envelope."""

    reason = "undecodable"


class SchemaError(CounterpointError):
    """Well-formed JSON that does not match the topic's event type."""

    reason = "schema-violation"


class UnknownEventType(CounterpointError):
    """A CloudEvent whose `ce_type` the topic does not carry."""

    reason = "unknown-event-type"


class TooLarge(CounterpointError):
    """A record bigger than the configured limit (`InputLimits.max_bytes`)."""

    reason = "too-large"


class TooDeep(CounterpointError):
    """JSON nested deeper than the configured limit (`InputLimits.max_depth`)."""

    reason = "too-deep"


class TransientError(CounterpointError):
    """A failure that may pass by itself: a timeout, an overloaded model, a broker hiccup."""

    retriable = True
    reason = "transient"


class UndeclaredEmit(CounterpointError):
    """A handler emitted to a topic its agent does not declare: a bug in the agent."""

    reason = "undeclared-emit"


class DuplicateEmit(CounterpointError):
    """A handler returned two emits that would get one event id: a bug in the agent."""

    reason = "duplicate-emit"


def is_retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False))


def reason_of(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or "handler-error"
