"""Declarations checked when an agent is built (bus/checks.py), and emits that would share one
event id checked when a handler returns them."""

from __future__ import annotations

import orjson
import pytest
from pydantic import BaseModel

from counterpoint.bus.agent import Agent, AgentDeclarationError, Emit, Incoming
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.envelope import Envelope
from counterpoint.topics.topic import DEADLETTER_NAME, intake, topic


class Note(BaseModel):
    id: str
    text: str


NOTES = intake("notes.in", Note)
A = topic("notes.a", Note)
B = topic("notes.b", Note)
B8 = topic("notes.b8", Note, partitions=8)
BY_SOURCE = topic("notes.by_source", Note, key="source")


def _joiner(*joined: object, **kw: object) -> Agent:
    agent = Agent("joiner", emits=[], joins=joined, **kw)  # type: ignore[arg-type]
    for t in {id(t): t for t in (A, B, B8, BY_SOURCE)}.values():
        if t in joined:
            async def on(event: Incoming[Note]) -> list[Emit]:
                return []
            agent.handles(t)(on)
    return agent


def test_a_join_of_co_partitioned_topics_is_built_with_the_range_assignor() -> None:
    agent = _joiner(A, B)
    MemoryBus().add(agent)
    assert agent.assignor == "range"


@pytest.mark.parametrize(("joined", "kw", "expected"), [
    ((A, B8), {}, "notes.a (4 partitions) and notes.b8 (8): a join's topics need equal"),
    ((A, BY_SOURCE), {}, "notes.a keyed by request_id and notes.by_source keyed by source"),
    ((A, B), {"assignor": "roundrobin"}, "a join needs assignor='range'"),
])
def test_a_join_that_could_split_a_key_fails_when_built(joined: tuple[object, ...],
                                                         kw: dict[str, object],
                                                         expected: str) -> None:
    with pytest.raises(AgentDeclarationError, match=r"agent joiner: ") as info:
        MemoryBus().add(_joiner(*joined, **kw))
    assert expected in str(info.value)


def test_a_joined_topic_needs_a_handler() -> None:
    agent = Agent("joiner", emits=[], joins=[A, B])

    @agent.handles(A)
    async def on_a(event: Incoming[Note]) -> list[Emit]:
        return []

    with pytest.raises(AgentDeclarationError, match=r"it joins notes\.b but has no handler"):
        MemoryBus().add(agent)


def _relay(emits: list[object]) -> Agent:
    return Agent("relay", emits=emits)  # type: ignore[arg-type]


def test_an_emit_to_an_undeclared_topic_fails_at_start_up() -> None:
    agent = _relay([A])

    @agent.handles(NOTES)
    async def on_note(event: Incoming[Note]) -> list[Emit]:
        return [Emit(A, event.data, key=event.request_id),
                Emit(B, event.data, key=event.request_id)]

    with pytest.raises(AgentDeclarationError) as info:
        MemoryBus().add(agent)
    message = str(info.value)
    assert "on_note emits to notes.b (line" in message
    assert "add it to emits=[...] (declared: notes.a)" in message


def _forward(event: Incoming[Note]) -> list[Emit]:
    return [Emit(topic=B, data=event.data, key=event.request_id)]


def test_emits_in_the_helpers_a_handler_calls_are_checked_too() -> None:
    agent = _relay([A])

    @agent.handles(NOTES)
    async def on_note(event: Incoming[Note]) -> list[Emit]:
        return _forward(event)

    with pytest.raises(AgentDeclarationError, match=r"emits to notes\.b"):
        MemoryBus().add(agent)


async def test_a_topic_chosen_at_run_time_is_still_caught_at_run_time() -> None:
    agent = _relay([A])
    targets = {"a": A, "b": B}

    @agent.handles(NOTES)
    async def on_note(event: Incoming[Note]) -> list[Emit]:
        return [Emit(targets[event.data.text], event.data, key=event.request_id)]

    bus = MemoryBus()
    bus.add(agent)  # nothing to see statically
    await bus.publish(NOTES.name, orjson.dumps({"id": "1", "text": "b"}))
    await bus.run_until_idle()
    (letter,) = [DeadLetter.from_record(r) for r in bus.records(DEADLETTER_NAME)]
    assert letter.reason == "undeclared-emit"


async def test_two_different_events_under_one_id_are_dead_lettered_not_silently_dropped() -> None:
    agent = _relay([A])

    @agent.handles(NOTES)
    async def on_note(event: Incoming[Note]) -> list[Emit]:
        first = Note(id=event.data.id, text="first")
        second = Note(id=event.data.id, text="second")
        return [Emit(A, first, key=event.request_id), Emit(A, second, key=event.request_id)]

    bus = MemoryBus()
    bus.add(agent)
    await bus.publish(NOTES.name, orjson.dumps({"id": "1", "text": "x"}))
    await bus.run_until_idle()
    (letter,) = [DeadLetter.from_record(r) for r in bus.records(DEADLETTER_NAME)]
    assert letter.reason == "duplicate-emit"
    assert "two different events to notes.a with tag ''" in letter.message
    assert bus.records(A.name) == []


async def test_an_exact_repeat_is_one_event() -> None:
    agent = _relay([A])

    @agent.handles(NOTES)
    async def on_note(event: Incoming[Note]) -> list[Emit]:
        return [Emit(A, event.data, key=event.request_id, tag="x")] * 2 + [
            Emit(A, event.data, key=event.request_id, tag="y")]

    bus = MemoryBus()
    bus.add(agent)
    await bus.publish(NOTES.name, orjson.dumps({"id": "1", "text": "x"}))
    await bus.run_until_idle()
    ids = [Envelope.from_headers(r.headers).id for r in bus.records(A.name)]  # type: ignore[union-attr]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert bus.records(DEADLETTER_NAME) == []
