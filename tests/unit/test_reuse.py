"""Avoiding redundant work: an alert storm runs one investigation, the duplicates reuse it.

The pipeline tests run every agent on the in-memory bus and count the investigations that
reached the model; tests/integration/test_cost_memory.py runs the storm on a real broker.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from counterpoint.agents.budget import metered
from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.cost import PriceTable
from counterpoint.agents.llm.offline import OFFLINE_MODEL
from counterpoint.agents.reuse import FindingCache, task_cache_key
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.events import (
    Finding,
    Generation,
    InvestigationTask,
    Subject,
    Usage,
)
from counterpoint.topics.registry import (
    DEADLETTER_NAME,
    INTAKE_ALERTS,
    INTAKE_TICKETS,
    SYNTHESIS_RESULTS,
    TASKS,
    TRIAGE_DECISIONS,
)
from tests.support.spy import Spy

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
ALERT = orjson.loads((EXAMPLES / "alert_alertmanager.json").read_bytes())
STORM = 50


def _alert(fingerprint: str, status: str = "firing", fired: int = 0) -> bytes:
    """`fired`: the alert fired again that many seconds later (a new startsAt, a new request)."""
    alert = orjson.loads(orjson.dumps(ALERT))
    alert["alerts"][0]["fingerprint"] = fingerprint
    alert["alerts"][0]["startsAt"] = f"2026-11-21T13:45:{fired:02d}Z"
    alert["status"] = alert["alerts"][0]["status"] = status
    return orjson.dumps(alert)


async def _pipeline(store: BusinessStore, inputs: list[tuple[str, bytes]],
                    window: timedelta = timedelta(minutes=10)) -> tuple[MemoryBus, Spy]:
    spy = Spy()
    ctx = AgentContext(store=store, provider=spy,
                       defaults={"reuse_window_s": window.total_seconds()})
    bus = MemoryBus()
    for name in AGENT_NAMES:
        bus.add(build(name, ctx))
    for topic, value in inputs:
        await bus.publish(topic, value, key=b"k")
    await bus.run_until_idle(max_rounds=500)
    assert bus.records(DEADLETTER_NAME) == []
    return bus, spy


async def test_an_alert_storm_runs_one_investigation_and_fifty_results_cite_it(
        store: BusinessStore) -> None:
    # A flapping alert: the same fingerprint firing again and again, each time a new request.
    bus, spy = await _pipeline(store, [(INTAKE_ALERTS.name, _alert("fp-storm", fired=n))
                                       for n in range(STORM)])

    decisions = [TRIAGE_DECISIONS.decode(r.value or b"")
                 for r in bus.records(TRIAGE_DECISIONS.name)]
    assert len(decisions) == STORM
    planned = len(decisions[0].investigations)
    assert planned == 4  # logs, metrics, deploys, runbooks
    # One investigation per planned task, not fifty.
    assert spy.tasks.count("investigate") == planned
    task_records = [r for t in TASKS.values() for r in bus.records(t.name)]
    assert len(task_records) == STORM * planned
    assert len({r.key for r in task_records}) == planned  # identical tasks share a key

    results = [SYNTHESIS_RESULTS.decode(r.value or b"")
               for r in bus.records(SYNTHESIS_RESULTS.name)]
    assert len(results) == STORM
    assert {r.request_id for r in results} == {d.request_id for d in decisions}
    originals = [r for r in results if all(f.reused_from is None for f in r.findings)]
    (first,) = originals
    for result in results:
        assert result.status == "complete"
        assert len(result.findings) == planned
        if result is first:
            continue
        assert {f.reused_from.request_id for f in result.findings if f.reused_from} == {
            first.request_id}
        assert all(f.reused_from is not None for f in result.findings)
        assert "Reused, not investigated again" in result.text
        assert first.request_id in result.text
        for step, usage in result.usage_by_step.items():
            if step not in ("triage", "synthesis"):
                assert usage == Usage()  # a reused finding cost nothing


async def test_different_fingerprints_and_a_resolution_are_investigated_apart(
        store: BusinessStore) -> None:
    _, spy = await _pipeline(store, [(INTAKE_ALERTS.name, _alert("fp-a")),
                                     (INTAKE_ALERTS.name, _alert("fp-b")),
                                     (INTAKE_ALERTS.name, _alert("fp-a"))])
    assert spy.tasks.count("investigate") == 2 * 4


async def test_identical_tickets_reuse_but_another_customer_does_not(
        store: BusinessStore) -> None:
    body = "My invoice is wrong, I was charged twice"
    same = orjson.dumps({"id": "T-1", "customer_id": "C-42", "body": body})
    again = orjson.dumps({"id": "T-2", "customer_id": "C-42", "body": body})
    other = orjson.dumps({"id": "T-3", "customer_id": "C-19", "body": body})
    bus, spy = await _pipeline(store, [(INTAKE_TICKETS.name, v) for v in (same, again, other)])
    # billing + knowledge per distinct (customer, text): two cases, not three.
    assert spy.tasks.count("investigate") == 2 * 2
    results = {r.source_id: r for r in (SYNTHESIS_RESULTS.decode(x.value or b"")
                                        for x in bus.records(SYNTHESIS_RESULTS.name))}
    assert all(f.reused_from is None for f in results["T-1"].findings)
    assert all(f.reused_from is not None for f in results["T-2"].findings)
    assert all(f.reused_from is None for f in results["T-3"].findings)


async def test_a_finding_that_ran_out_of_budget_is_not_reused(store: BusinessStore) -> None:
    alert = orjson.loads(_alert("fp-poor"))
    # $1 per million output tokens: each call reserves its max_tokens (1024), about $0.001.
    # Enough for triage and synthesis, not for four investigators sharing half the rest.
    alert["budget_usd"] = 0.0015
    prices = PriceTable.configured(json.dumps({OFFLINE_MODEL: {"input": 0, "output": 1}}))
    spy = Spy()
    ctx = AgentContext(store=store, provider=metered(spy, prices))
    bus = MemoryBus()
    for name in AGENT_NAMES:
        bus.add(build(name, ctx))
    for n in range(3):
        alert["alerts"][0]["startsAt"] = f"2026-11-21T13:45:{n:02d}Z"  # fired again: new request
        await bus.publish(INTAKE_ALERTS.name, orjson.dumps(alert), key=b"k")
    await bus.run_until_idle(max_rounds=500)
    results = [SYNTHESIS_RESULTS.decode(r.value or b"")
               for r in bus.records(SYNTHESIS_RESULTS.name)]
    assert len(results) == 3 and spy.tasks.count("investigate") == 0
    for result in results:
        assert len(result.findings) == 4 and result.status == "partial"
        assert all(f.reused_from is None and "budget ran out" in f.summary
                   for f in result.findings)


async def test_after_the_window_the_investigation_runs_again(store: BusinessStore) -> None:
    _, spy = await _pipeline(store, [(INTAKE_ALERTS.name, _alert("fp-w", fired=n))
                                     for n in range(3)], window=timedelta(0))
    assert spy.tasks.count("investigate") == 3 * 4


# --- the cache itself -----------------------------------------------------------------------


def _task(task_id: str, request_id: str, source: str = "fp-1") -> InvestigationTask:
    subject = Subject(kind="alert", source_id=source, title="HighErrorRate", text="5xx",
                      service="checkout-api", labels={"status": "firing"})
    return InvestigationTask(task_id=task_id, request_id=request_id, skill="infrastructure",
                             focus="logs", subject=subject)


def _finding(task: InvestigationTask) -> Finding:
    return Finding(task_id=task.task_id, request_id=task.request_id, skill=task.skill,
                   focus=task.focus, agent="infrastructure", summary="deploy broke it",
                   facts=[], generation=Generation(provider="offline", model="m", offline=True),
                   usage=Usage(input_tokens=5, output_tokens=5, calls=1, cost_usd=0.1))


def test_cache_reuses_within_the_window_and_forgets_after() -> None:
    now = [0.0]
    cache = FindingCache(timedelta(seconds=60), clock=lambda: now[0])
    first = _task("t1", "r1")
    key = task_cache_key(first.skill, first.focus, first.subject)
    cache.put(key, _finding(first))
    now[0] = 59.0
    reused = cache.reuse(_task("t2", "r2"))
    assert reused is not None
    assert (reused.task_id, reused.request_id) == ("t2", "r2")
    assert reused.reused_from is not None
    assert (reused.reused_from.task_id, reused.reused_from.request_id) == ("t1", "r1")
    assert reused.reused_from.at <= datetime.now(UTC)
    assert reused.usage == Usage()
    assert cache.hits == 1
    now[0] = 61.0
    assert cache.reuse(_task("t3", "r3")) is None


def test_a_redelivered_task_gets_its_own_finding_not_a_reuse() -> None:
    cache = FindingCache()
    first = _task("t1", "r1")
    original = _finding(first)
    cache.put(task_cache_key(first.skill, first.focus, first.subject), original)
    assert cache.reuse(first) == original
    assert cache.hits == 0


def test_cache_is_bounded() -> None:
    cache = FindingCache(max_entries=2)
    for n in range(3):
        task = _task(f"t{n}", f"r{n}", source=f"fp-{n}")
        cache.put(task_cache_key(task.skill, task.focus, task.subject), _finding(task))
    assert cache.reuse(_task("x", "y", source="fp-0")) is None
    assert cache.reuse(_task("x", "y", source="fp-2")) is not None


def test_cache_keys_follow_the_case_not_the_wording_of_an_alert() -> None:
    a = _task("t1", "r1")
    reworded = a.subject.model_copy(update={"text": "5xx at 15.2%", "title": "other words"})
    resolved = a.subject.model_copy(update={"labels": {"status": "resolved"}})
    key = task_cache_key("infrastructure", "logs", a.subject)
    assert task_cache_key("infrastructure", "logs", reworded) == key
    assert task_cache_key("infrastructure", "logs", resolved) != key
    assert task_cache_key("infrastructure", "metrics", a.subject) != key

