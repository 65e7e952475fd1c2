"""Dead letters: the original record, untouched, plus headers that say why.

The value and key are the original bytes; the original headers are kept; these are added:

    dlq.reason          short machine-readable reason (undecodable, schema-violation, ...)
    dlq.error.class     exception class name
    dlq.error.message   human-readable message naming the field and the problem
    dlq.source.topic / dlq.source.partition / dlq.source.offset
    dlq.agent           the agent that gave up on it; dlq.group its consumer group
    dlq.attempts        how many times it was tried
    dlq.first_failure / dlq.last_failure   RFC 3339 times
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from counterpoint.bus.decode import RawRecord
from counterpoint.bus.errors import reason_of

PREFIX: Final = "dlq."
REDRIVE_PREFIX: Final = "dlq.redrive."
MAX_MESSAGE: Final = 2000


@dataclass(frozen=True)
class Failure:
    error: BaseException
    attempts: int
    first_failure: datetime
    last_failure: datetime


def deadletter_headers(record: RawRecord, failure: Failure, *, agent: str,
                       group: str) -> list[tuple[str, bytes]]:
    message = str(failure.error) or repr(failure.error)
    added = {
        "reason": reason_of(failure.error),
        "error.class": type(failure.error).__name__,
        "error.message": message[:MAX_MESSAGE],
        "source.topic": record.topic,
        "source.partition": str(record.partition),
        "source.offset": str(record.offset),
        "agent": agent,
        "group": group,
        "attempts": str(failure.attempts),
        "first_failure": failure.first_failure.isoformat(),
        "last_failure": failure.last_failure.isoformat(),
    }
    # The record's own dlq.redrive.* history stays: a redriven record that fails again still
    # says how often it was redriven. Its old error headers are replaced by the new ones.
    kept = [(k, v) for k, v in record.headers
            if not k.startswith(PREFIX) or k.startswith(REDRIVE_PREFIX)]
    return kept + [(PREFIX + k, v.encode()) for k, v in added.items()]


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter read back: for the CLI, tests and redrive."""

    record: RawRecord
    reason: str
    error_class: str
    message: str
    source_topic: str
    source_partition: int
    source_offset: int
    agent: str
    attempts: int

    @classmethod
    def from_record(cls, record: RawRecord) -> DeadLetter:
        h = {k[len(PREFIX):]: v.decode("utf-8", "replace")
             for k, v in record.headers if k.startswith(PREFIX)}
        return cls(
            record=record,
            reason=h.get("reason", "?"),
            error_class=h.get("error.class", "?"),
            message=h.get("error.message", ""),
            source_topic=h.get("source.topic", "?"),
            source_partition=int(h.get("source.partition", "-1")),
            source_offset=int(h.get("source.offset", "-1")),
            agent=h.get("agent", "?"),
            attempts=int(h.get("attempts", "0")),
        )
