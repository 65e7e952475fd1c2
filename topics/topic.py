"""A topic declaration: its name, the event type it carries, its partitions and key.

Agents declare the topics they consume and emit, in their own code; the topics an agent
process needs are created from those declarations when it starts, so a user's topic needs no
central list. `topic()` declares an internal topic (CloudEvents in binary mode), `intake()` one
that also takes raw JSON from any Kafka client:

    LEADS = intake("sales.leads", Lead)
    RESEARCH = topic("sales.research", Research, key="request_id")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from pydantic import TypeAdapter

E = TypeVar("E")

DEADLETTER_NAME: Final = "deadletter"
# The dead-letter topic holds original bytes of any topic, so it has no event type.
DEADLETTER_PARTITIONS: Final = 4
DEFAULT_PARTITIONS: Final = 4


@dataclass(frozen=True)
class Topic(Generic[E]):
    """One Kafka topic: its name, shape and what its records are keyed by.

    `key` names the field records are keyed by ("request_id", "source", ...). Joins read it:
    the topics one join reads must be keyed alike and have equal partition counts, so one
    key's records meet in one process (checked when the agent is built, bus/checks.py).
    """

    name: str
    ce_type: str
    event_type: Any = field(repr=False)
    key: str = "request_id"
    partitions: int = DEFAULT_PARTITIONS
    # Intake topics take raw JSON from any Kafka client; the bus wraps it in an envelope.
    raw_intake: bool = False
    description: str = ""
    adapter: TypeAdapter[E] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or self.name == DEADLETTER_NAME:
            raise ValueError(f"topic name {self.name!r} is reserved or empty")
        if self.partitions < 1:
            raise ValueError(f"{self.name}: partitions must be at least 1")
        object.__setattr__(self, "adapter", TypeAdapter(self.event_type))

    def decode(self, value: bytes) -> E:
        """Validate JSON bytes into the topic's event type (raises pydantic.ValidationError)."""
        return self.adapter.validate_json(value)

    def same_as(self, other: Topic[Any]) -> bool:
        """Whether two declarations of one topic name agree on everything that matters."""
        return (self.name, self.ce_type, self.event_type, self.key, self.partitions,
                self.raw_intake) == (other.name, other.ce_type, other.event_type, other.key,
                                     other.partitions, other.raw_intake)


def topic(name: str, event_type: type[E], *, key: str = "request_id",
          partitions: int = DEFAULT_PARTITIONS, ce_type: str | None = None,
          description: str = "") -> Topic[E]:
    """An internal topic: events published by agents, CloudEvents in binary mode."""
    return Topic(name=name, ce_type=ce_type or name, event_type=event_type, key=key,
                 partitions=partitions, description=description)


def intake(name: str, event_type: type[E], *, key: str = "source",
           partitions: int = DEFAULT_PARTITIONS, ce_type: str | None = None,
           description: str = "") -> Topic[E]:
    """A topic business systems publish to: raw JSON from any Kafka client, or CloudEvents.

    A raw record becomes a new request whose id derives from where it sits in the log.
    """
    return Topic(name=name, ce_type=ce_type or f"{name}.received", event_type=event_type,
                 key=key, partitions=partitions, raw_intake=True, description=description)
