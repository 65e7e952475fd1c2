"""Synthesis's join survives its process dying: inputs stay uncommitted until the result is
acknowledged, and a fresh process rebuilds the join from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from counterpoint.agents.catalog import build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.agent import Agent
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.demo import example
from counterpoint.schemas.envelope import Envelope
from counterpoint.topics.registry import (
    INTAKE_TICKETS,
    INVESTIGATION_FINDINGS,
    SYNTHESIS_RESULTS,
    TRIAGE_DECISIONS,
)


@pytest.fixture
def store(tmp_path: Path) -> BusinessStore:
    return BusinessStore.open(tmp_path / "business.db")


def _results(bus: MemoryBus) -> list[tuple[str, str]]:
    out = []
    for r in bus.records(SYNTHESIS_RESULTS.name):
        env = Envelope.from_headers(r.headers)
        assert env is not None and r.value is not None
        out.append((env.id, SYNTHESIS_RESULTS.decode(r.value).status))
    return out


def _held_partition(bus: MemoryBus, synthesis: Agent) -> tuple[int, int]:
    (decision,) = bus.records(TRIAGE_DECISIONS.name)
    return decision.partition, decision.offset


async def test_a_join_interrupted_by_a_crash_is_rebuilt_and_completes_once(
        store: BusinessStore) -> None:
    ctx = AgentContext(store=store, provider=OfflineProvider())
    bus = MemoryBus()
    for name in ("triage", "billing", "knowledge"):  # account is down: the join must wait
        bus.add(build(name, ctx))
    first = build("synthesis", ctx)
    bus.add(first)
    await bus.publish(INTAKE_TICKETS.name, example("ticket_dual_intent.json"), key=b"T-1001")
    await bus.run_until_idle()
    assert _results(bus) == []

    # The plan and both findings are held: nothing of the request is committed.
    partition, offset = _held_partition(bus, first)
    assert bus.committed(first, TRIAGE_DECISIONS.name, partition) == offset
    findings = [r for r in bus.records(INVESTIGATION_FINDINGS.name)]
    assert len(findings) == 2
    for f in findings:
        assert bus.committed(first, INVESTIGATION_FINDINGS.name, f.partition) <= f.offset

    # The synthesis process dies; a new one takes over from the committed offsets.
    second = build("synthesis", ctx)
    bus.restart(first, second)
    bus.add(build("account", ctx))
    await bus.run_until_idle()

    results = _results(bus)
    assert [status for _, status in results] == ["complete"]
    # Once the result is acknowledged, every input of the request is committed.
    assert bus.committed(second, TRIAGE_DECISIONS.name, partition) == offset + 1
    for f in bus.records(INVESTIGATION_FINDINGS.name):
        assert bus.committed(second, INVESTIGATION_FINDINGS.name, f.partition) > f.offset


async def test_a_result_rebuilt_after_a_crash_has_the_same_id(store: BusinessStore) -> None:
    """A crash after the result but before the commit redoes the join: same result id."""
    ctx = AgentContext(store=store, provider=OfflineProvider())
    bus = MemoryBus()
    for name in ("triage", "billing", "account", "knowledge"):
        bus.add(build(name, ctx))
    first = build("synthesis", ctx)
    bus.add(first)
    await bus.publish(INTAKE_TICKETS.name, example("ticket_dual_intent.json"), key=b"T-1001")
    await bus.run_until_idle()
    (first_id, _), = _results(bus)

    # Simulate losing the commit: a fresh process replays everything from offset 0.
    replay = MemoryBus()
    second = build("synthesis", ctx)
    replay.add(second)
    for topic in (TRIAGE_DECISIONS.name, INVESTIGATION_FINDINGS.name):
        for r in bus.records(topic):
            await replay.publish(topic, r.value or b"", key=r.key, headers=r.headers)
    await replay.run_until_idle()
    (second_id, status), = _results(replay)
    assert second_id == first_id and status == "complete"


async def test_the_deadline_still_fires_after_a_restart(store: BusinessStore) -> None:
    fast = AgentContext(store=store, provider=OfflineProvider(),
                        defaults={"synthesis_deadline_s": 1e-6, "replay_grace_s": 0})
    bus = MemoryBus()
    for name in ("triage", "billing", "knowledge"):
        bus.add(build(name, fast))
    slow = AgentContext(store=store, provider=OfflineProvider(),
                        defaults={"synthesis_deadline_s": 3600})
    first = build("synthesis", slow)  # would wait an hour; it dies before that
    bus.add(first)
    await bus.publish(INTAKE_TICKETS.name, example("ticket_dual_intent.json"), key=b"T-1001")
    await bus.run_until_idle()
    await bus.tick(first)
    assert _results(bus) == []

    second = build("synthesis", fast)
    bus.restart(first, second)
    await bus.run_until_idle()  # rebuilds the join from the held inputs
    await bus.tick(second)
    assert [status for _, status in _results(bus)] == ["partial"]
    await bus.tick(second)
    assert len(_results(bus)) == 1  # fires once
