"""How an agent declares what it consumes and emits.

    agent = Agent("triage", emits=[TRIAGE_DECISIONS, *TASKS.values()])

    @agent.handles(INTAKE_TICKETS)
    async def on_ticket(event: Incoming[Ticket]) -> list[Emit]:
        ...

The handler's parameter annotation must name the topic's event type; a mismatch fails when the
agent is built, not at the first message. A handler returns the events to publish; the runtime
derives their ids from the input's, publishes them and commits only afterwards.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar

from pydantic import BaseModel

from counterpoint.schemas.envelope import Envelope
from counterpoint.topics.topic import Topic

E = TypeVar("E")

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class Cause:
    """What a later emit needs from the event that caused it: ids and trace context."""

    event_id: str
    request_id: str
    subject: str | None
    trace_headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(eq=False)
class Hold:
    """Keeps one record uncommitted until released.

    A join holds its inputs until the event it produces from them is acknowledged: if the
    process dies first, the inputs are redelivered and the join is rebuilt from them.
    """

    topic: str
    partition: int
    offset: int
    event_id: str
    released: bool = False
    _on_release: Callable[[Hold], None] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Called by the bus once the effects this hold waited for are acknowledged."""
        if self.released:
            return
        self.released = True
        if self._on_release is not None:
            self._on_release(self)

    def attach(self, on_release: Callable[[Hold], None]) -> None:
        self._on_release = on_release
        if self.released:
            on_release(self)


@dataclass
class Settlement:
    """What a handler decided about records beyond the events it returned."""

    hold: Hold | None = None
    release: list[Hold] = field(default_factory=list)


@dataclass(frozen=True)
class Incoming(Generic[E]):
    envelope: Envelope
    data: E
    topic: str
    partition: int
    offset: int
    # The trace context of the `process` span, as headers, so deferred emits stay in the trace.
    trace_headers: tuple[tuple[str, bytes], ...] = ()
    settlement: Settlement = field(default_factory=Settlement, repr=False, compare=False)

    @property
    def request_id(self) -> str:
        return self.envelope.request_id

    def cause(self) -> Cause:
        return Cause(self.envelope.id, self.envelope.request_id, self.envelope.subject,
                     self.trace_headers)

    def hold(self) -> Hold:
        """Keep this record uncommitted (and redelivered after a crash) until released."""
        if self.settlement.hold is None:
            self.settlement.hold = Hold(self.topic, self.partition, self.offset,
                                        self.envelope.id)
        return self.settlement.hold

    def release_after_ack(self, holds: Iterable[Hold]) -> None:
        """Release `holds` once the events this handler returns are acknowledged."""
        self.settlement.release.extend(holds)


@dataclass(frozen=True)
class Emit:
    """One event to publish. `tag` tells apart several emits to one topic from one input."""

    topic: Topic[Any]
    data: BaseModel
    key: str
    tag: str = ""
    subject: str | None = None
    # Derive the id from this event id instead of the input's: an output that several inputs
    # may produce (synthesis's result) keeps one id whichever input triggered it.
    derive_from: str | None = None
    # The request this event belongs to, when not the input's: triage files an Alertmanager
    # notification under the request id its alert identity gives (schemas/identity.py).
    request_id: str | None = None


Handler = Callable[[Incoming[Any]], Awaitable[Sequence[Emit]]]


class Publisher(typing.Protocol):
    """Publishes emits outside a handler (timers); used by periodic tasks."""

    async def emit(self, emits: Sequence[Emit], cause: Cause,
                   release: Iterable[Hold] = ()) -> None:
        """Publish, wait for the acks, then release `release`."""
        ...


Revoked = Callable[[set[tuple[str, int]]], None]


Periodic = Callable[[Publisher], Awaitable[None]]


class AgentDeclarationError(TypeError):
    pass


NAME_PATTERN: Final = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,99}$")
DEFAULT_GROUP_PREFIX: Final = "counterpoint"


@dataclass
class Agent:
    """One agent type: the topics it handles and emits. Each type is one consumer group;
    every process running it shares that group's partitions."""

    name: str
    emits: Sequence[Topic[Any]]
    # Topics this agent joins by key: they must be co-partitioned (bus/checks.py), and the
    # agent then reads with the range assignor, which keeps partition N of each on one process.
    joins: Sequence[Topic[Any]] = ()
    # None: "range" for a join, else "roundrobin".
    assignor: Literal["roundrobin", "range"] | None = None
    # The consumer group; None = `counterpoint.NAME` (a project sets `PROJECT.NAME`).
    group: str | None = None
    handlers: dict[str, tuple[Topic[Any], Handler]] = field(default_factory=dict)
    periodic: list[tuple[float, Periodic]] = field(default_factory=list)
    revoked_hooks: list[Revoked] = field(default_factory=list)
    # (the emits tuple it was built from, its topic names): `declared` runs for every emit.
    _declared: tuple[Sequence[Topic[Any]], frozenset[str]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise AgentDeclarationError(
                f"agent name {self.name!r}: use a letter, then letters, digits, ., _ or - "
                "(it names the agent's consumer group, processes and log files)")
        self.emits = tuple(self.emits)
        self.joins = tuple(self.joins)
        if self.assignor is None:
            self.assignor = "range" if self.joins else "roundrobin"

    @property
    def group_id(self) -> str:
        return self.group or f"{DEFAULT_GROUP_PREFIX}.{self.name}"

    @property
    def consumes(self) -> list[Topic[Any]]:
        return [topic for topic, _ in self.handlers.values()]

    @property
    def topics(self) -> list[Topic[Any]]:
        """Every topic this agent reads or writes, once each: what its process creates."""
        seen: dict[str, Topic[Any]] = {}
        for t in [*self.consumes, *self.emits]:
            seen.setdefault(t.name, t)
        return list(seen.values())

    def handles(self, topic: Topic[E]) -> Callable[[Callable[[Incoming[E]], Awaitable[Sequence[Emit]]]], Callable[[Incoming[E]], Awaitable[Sequence[Emit]]]]:  # noqa: E501
        def register(
            fn: Callable[[Incoming[E]], Awaitable[Sequence[Emit]]],
        ) -> Callable[[Incoming[E]], Awaitable[Sequence[Emit]]]:
            _check_annotation(fn, topic)
            if topic.name in self.handlers:
                raise AgentDeclarationError(f"{self.name}: two handlers for {topic.name}")
            self.handlers[topic.name] = (topic, fn)
            return fn

        return register

    def every(self, seconds: float) -> Callable[[Periodic], Periodic]:
        def register(fn: Periodic) -> Periodic:
            self.periodic.append((seconds, fn))
            return fn

        return register

    def on_revoked(self, fn: Revoked) -> Revoked:
        """`fn(partitions)` runs when this process loses partitions: drop their state."""
        self.revoked_hooks.append(fn)
        return fn

    def declared(self, topic: Topic[Any]) -> bool:
        cached = self._declared
        if cached is None or cached[0] is not self.emits:
            cached = self._declared = (self.emits, frozenset(t.name for t in self.emits))
        return topic.name in cached[1]


def _check_annotation(fn: Callable[..., Any], topic: Topic[Any]) -> None:
    """Fail at start-up when the handler's `Incoming[X]` does not match the topic's type."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise AgentDeclarationError(f"{fn.__qualname__}: unresolvable annotations: {exc}") from exc
    params = [v for k, v in hints.items() if k != "return"]
    if len(params) != 1 or typing.get_origin(params[0]) is not Incoming:
        raise AgentDeclarationError(
            f"{fn.__qualname__} must take exactly one Incoming[...] parameter"
        )
    (declared,) = typing.get_args(params[0])
    if declared != topic.event_type:
        raise AgentDeclarationError(
            f"{fn.__qualname__} takes Incoming[{_name(declared)}] but {topic.name} carries "
            f"{_name(topic.event_type)}"
        )


def _name(tp: Any) -> str:
    name = getattr(tp, "__name__", None)
    return name if isinstance(name, str) else str(tp)
