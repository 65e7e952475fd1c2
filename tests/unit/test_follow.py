"""The live status line of `counterpoint results --follow`, folded from records the real
agents produce on the in-memory bus."""

from __future__ import annotations

from pathlib import Path

import pytest

from counterpoint.agents.catalog import build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.follow import FollowState, stage, status_line
from counterpoint.infra.progress import WATCHED
from counterpoint.topics.registry import INTAKE_TICKETS
from counterpoint_demo.store import BusinessStore
from tests.support.demo_business import demo_context

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"


@pytest.fixture
def ctx(tmp_path: Path) -> AgentContext:
    return demo_context(BusinessStore.open(tmp_path / "demo-business.db"),
                        provider=OfflineProvider())


def watched(bus: MemoryBus) -> list[RawRecord]:
    return [r for t in WATCHED for r in bus.records(t.name)]


async def test_status_line_counts_requests_and_names_each_pending_stage(
        ctx: AgentContext) -> None:
    bus = MemoryBus()
    for name in ("triage", "billing", "synthesis"):  # no account or knowledge agent yet
        bus.add(build(name, ctx))
    raw = (EXAMPLES / "ticket_dual_intent.json").read_bytes()
    await bus.publish(INTAKE_TICKETS.name, raw, key=b"T-1001")
    await bus.run_until_idle()

    state = FollowState()
    printed = [r for r in map(state.apply, watched(bus)) if r is not None]
    assert printed == []
    (pending,) = state.pending()
    assert stage(pending) == "investigating 1/3"  # billing answered; account, knowledge not
    line = status_line(state).plain
    assert line.startswith("requests 1 · in progress 1 · done 0 │ ")
    assert f"{pending.request_id[:8]} investigating 1/3" in line

    for name in ("account", "knowledge"):
        bus.add(build(name, ctx))
    await bus.run_until_idle()
    state = FollowState()
    printed = [r for r in map(state.apply, watched(bus)) if r is not None]
    (result,) = printed
    assert result.kind == "reply"
    assert status_line(state).plain == "requests 1 · in progress 0 · done 1"
    # Fed again (a redelivery, or the reader starting over): nothing is printed twice.
    assert [r for r in map(state.apply, watched(bus)) if r is not None] == []


async def test_only_one_request_when_asked(ctx: AgentContext) -> None:
    bus = MemoryBus()
    bus.add(build("triage", ctx))
    raw = (EXAMPLES / "ticket_dual_intent.json").read_bytes()
    await bus.publish(INTAKE_TICKETS.name, raw, key=b"T-1001")
    await bus.run_until_idle()
    state = FollowState(only="some-other-request")
    for record in watched(bus):
        state.apply(record)
    assert state.requests == {}
    assert status_line(state).plain == "requests 0 · in progress 0 · done 0"
    state = FollowState()
    for record in watched(bus):
        state.apply(record)
    (p,) = state.pending()
    assert stage(p) == "investigating 0/3"
