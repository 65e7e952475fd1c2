"""Fan-in: wait for the parts a plan names, then compose; on the plan's deadline, compose what
arrived (a partial result).

    fan_in = FanIn(agent, plan=DRAFTS, part=REVIEWS,
                   plan_key=lambda d: d.draft_id, part_key=lambda r: r.draft_id,
                   expects=lambda d: ["seo", "facts"], part_id=lambda r: r.kind,
                   compose=publish_edit, wait=timedelta(seconds=30))

    async def publish_edit(g: Gathering[Draft, Review]) -> list[Emit]:
        missing = fan_in.missing(g)   # [] when complete, else what the deadline cut off
        ...

Guarantees (synthesis's join is one use of this):
- Crash-safe. Every input of a pending key is held (its offset stays uncommitted) until the
  composed events are acknowledged. If the process dies or loses the partition, the inputs are
  redelivered to the next owner, which rebuilds the join from them.
- The deadline is absolute: the plan's own (`deadline`), at most `wait` after this process saw
  the plan, and never sooner than `replay_grace` after it, so a rebuilt join replays its parts
  before it can fire. Checked every second; a failed compose is tried again at the next tick.
- Once per key: a key composed recently (the last `remember`) is not joined again; parts are
  kept by part id, so a redelivered part is harmless; composed events derive their ids from
  the plan (unless they say otherwise), so a join rebuilt after a crash, completed by a
  different part, publishes the same events again, not new ones.
- Co-partitioned: the plan and part topics (and `also`, topics the agent joins on the same
  key with handlers of its own) become the agent's joins, read with the range assignor and
  checked when the agent is built (bus/checks.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from counterpoint.bus.agent import Agent, Cause, Emit, Hold, Incoming, Publisher
from counterpoint.schemas.envelope import now
from counterpoint.topics.topic import Topic

P = TypeVar("P")
F = TypeVar("F")

log = logging.getLogger(__name__)


@dataclass
class Gathering(Generic[P, F]):
    """One key's join: its plan, the parts so far, and the records held for them."""

    key: str
    partition: int
    plan: P | None = None
    cause: Cause | None = None  # the plan's (or first input's): composed ids derive from it
    parts: dict[str, F] = field(default_factory=dict)
    holds: list[Hold] = field(default_factory=list)
    due: datetime | None = None
    composing: bool = False
    # Compose as soon as the plan is here, whatever is missing (set by the agent's own inputs).
    now: bool = False
    # Whatever the agent's own inputs add to this key's join.
    extra: dict[str, Any] = field(default_factory=dict)


class FanIn(Generic[P, F]):
    def __init__(self, agent: Agent, *, plan: Topic[P], part: Topic[F],
                 plan_key: Callable[[P], str], part_key: Callable[[F], str],
                 expects: Callable[[P], Collection[str]], part_id: Callable[[F], str],
                 compose: Callable[[Gathering[P, F]], Awaitable[Sequence[Emit]]],
                 deadline: Callable[[P], datetime] | None = None,
                 wait: timedelta = timedelta(seconds=30),
                 replay_grace: timedelta = timedelta(seconds=2), remember: int = 10_000,
                 also: Sequence[Topic[Any]] = ()) -> None:
        self.agent = agent
        self.expects = expects
        self.replay_grace = replay_grace
        self.pending: dict[str, Gathering[P, F]] = {}
        self._done: dict[str, None] = {}  # insertion-ordered set, oldest evicted first
        self._remember = remember
        self._compose = compose
        self._topics: tuple[Topic[Any], ...] = (plan, part, *also)
        agent.joins = (*agent.joins, *(t for t in self._topics if t not in agent.joins))
        agent.assignor = "range"

        async def on_plan(event: Incoming[Any]) -> list[Emit]:
            key = plan_key(event.data)
            if key in self._done:
                return []  # composed and acknowledged already: nothing to hold
            g = self.track(key, event)
            g.plan, g.cause = event.data, event.cause()
            at = now()
            latest = at + wait if deadline is None else min(deadline(event.data), at + wait)
            g.due = max(latest, at + replay_grace)
            return await self.complete(g, event) if self._ready(g) else []

        async def on_part(event: Incoming[Any]) -> list[Emit]:
            key = part_key(event.data)
            if key in self._done:
                return []
            g = self.track(key, event)
            g.parts[part_id(event.data)] = event.data  # by id: a redelivery is harmless
            return await self.complete(g, event) if self._ready(g) else []

        for fn, topic in ((on_plan, plan), (on_part, part)):
            # The handler takes what its topic carries (checked like any handler's).
            carried: Any = Incoming
            fn.__annotations__ = {"event": carried[topic.event_type], "return": list[Emit]}
            agent.handles(topic)(fn)  # type: ignore[misc]
        agent.every(1.0)(self._deadlines)
        agent.on_revoked(self._drop)

    def done(self, key: str) -> bool:
        return key in self._done

    def track(self, key: str, event: Incoming[Any]) -> Gathering[P, F]:
        """This key's join, holding `event`'s record until the join is composed."""
        g = self.pending.setdefault(key, Gathering(key, event.partition))
        g.holds.append(event.hold())
        return g

    def missing(self, g: Gathering[P, F]) -> list[str]:
        """The part ids the plan names that have not arrived (in the plan's order)."""
        return [] if g.plan is None else [i for i in self.expects(g.plan) if i not in g.parts]

    async def complete(self, g: Gathering[P, F], event: Incoming[Any]) -> list[Emit]:
        """Compose now; every held input is released once the composed events are acked."""
        g.composing = True  # arrivals meanwhile are held too, and released with the output
        try:
            emits = self._from_plan(g, await self._compose(g))
        except BaseException:
            g.composing = False  # the handler is retried or dead-lettered; the join stays
            raise
        self._finish(g.key)
        event.release_after_ack(g.holds)
        return emits

    @staticmethod
    def _from_plan(g: Gathering[P, F], emits: Sequence[Emit]) -> list[Emit]:
        """Whichever input completed the join, what it composed gets one set of ids."""
        assert g.cause is not None
        return [e if e.derive_from else replace(e, derive_from=g.cause.event_id) for e in emits]

    def _ready(self, g: Gathering[P, F]) -> bool:
        if g.plan is None or g.composing:
            return False
        return g.now or not self.missing(g)

    async def _deadlines(self, publisher: Publisher) -> None:
        at = now()
        for g in [g for g in self.pending.values()
                  if g.due is not None and g.due <= at and not g.composing]:
            assert g.cause is not None
            if g.plan is not None:
                log.info("%s: %s passed its deadline with %d of %d parts", self.agent.name,
                         g.key, len(g.parts), len(self.expects(g.plan)))
            g.composing = True
            try:
                emits = self._from_plan(g, await self._compose(g))
                self._finish(g.key)
                await publisher.emit(emits, g.cause, release=list(g.holds))
            except Exception:
                self._reopen(g)  # tried again at the next tick
                raise

    def _finish(self, key: str) -> None:
        self.pending.pop(key, None)
        self._done[key] = None
        while len(self._done) > self._remember:
            self._done.pop(next(iter(self._done)))

    def _reopen(self, g: Gathering[P, F]) -> None:
        """Undo `_finish` when publishing the composed events failed."""
        self._done.pop(g.key, None)
        g.composing = False
        self.pending[g.key] = g

    def _drop(self, lost: set[tuple[str, int]]) -> None:
        """Forget keys of partitions this process lost: their next owner rebuilds them."""
        for key, g in list(self.pending.items()):
            if any((t.name, g.partition) in lost for t in self._topics):
                del self.pending[key]
