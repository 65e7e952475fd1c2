"""Cost, budgets, the alert storm and memory, on a real broker with one process per agent.

The offline model is priced at $1,000 per million tokens here (COUNTERPOINT_PRICES), so every
step costs something and a budget can run out without a key or a network.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.llm.offline import OFFLINE_MODEL
from counterpoint.agents.outcomes import OutcomeStore, default_memory_path
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import publish
from counterpoint.infra.telemetry import default_traces_dir
from counterpoint.infra.tracetree import load_spans
from counterpoint.schemas.events import Result
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config, wait_results

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

STORM = 50
PRICES = json.dumps({OFFLINE_MODEL: {"input": 1000, "output": 1000}})


@pytest.fixture(scope="module")
def stack(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    running = AgentStack(bootstrap, tmp_path_factory.mktemp("home"),
                         dict.fromkeys(AGENT_NAMES, 1),
                         extra_env={"COUNTERPOINT_PRICES": PRICES,
                                    "COUNTERPOINT_SYNTHESIS_DEADLINE_S": "120"})
    try:
        running.wait_joined(timeout_s=90)
        yield running
    finally:
        running.stop()


async def _ticket(stack: AgentStack, customer: str, body: str,
                  budget: float | None = None) -> Result:
    ticket: dict[str, object] = {"id": f"T-{uuid.uuid4().hex[:8]}", "customer_id": customer,
                                 "body": body}
    if budget is not None:
        ticket["budget_usd"] = budget
    receipt = await publish(config(stack.bootstrap), "ticket", orjson.dumps(ticket), "test")
    (result,) = await wait_results(stack.bootstrap, lambda r: r.request_id == receipt.request_id,
                                   timeout_s=90)
    return result


async def _remembered(stack: AgentStack, request_id: str, customer: str,
                      timeout_s: float = 30.0) -> None:
    """Wait until the memory process has recorded `request_id`."""
    store = OutcomeStore.open(default_memory_path(stack.home), scrub=str)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            past = store.recall(customer_id=customer, service=None, exclude="", limit=50)
            if any(p.request_id == request_id for p in past):
                return
            await asyncio.sleep(0.2)
    finally:
        store.close()
    raise AssertionError(f"memory did not record {request_id} within {timeout_s}s\n"
                         f"{stack.logs()}")


async def test_an_alert_storm_runs_one_investigation_and_fifty_results_cite_it(
        stack: AgentStack) -> None:
    alert = orjson.loads(example("alert_alertmanager.json"))
    alert["alerts"][0]["fingerprint"] = f"storm-{uuid.uuid4().hex[:8]}"
    receipts = []
    for n in range(STORM):
        # A flapping alert: the same fingerprint firing again, each time a new startsAt and so
        # a new request (schemas/identity.py).
        alert["alerts"][0]["startsAt"] = f"2026-11-21T13:45:{n:02d}Z"
        receipts.append(await publish(config(stack.bootstrap), "alert", orjson.dumps(alert),
                                      "test"))
    wanted = {r.request_id for r in receipts}

    results = await wait_results(stack.bootstrap, lambda r: r.request_id in wanted,
                                 count=STORM, timeout_s=300)

    assert {r.request_id for r in results} == wanted, stack.logs()
    findings = [f for r in results for f in r.findings]
    assert len(findings) == STORM * 4  # logs, metrics, deploys, runbooks
    investigated = [f for f in findings if f.reused_from is None]
    # One investigation per planned task, in the one process owning its key.
    assert sorted(f.focus for f in investigated) == sorted(
        {f.focus for f in findings}), [(f.focus, f.task_id) for f in investigated]
    origins = {f.reused_from.request_id for f in findings if f.reused_from}
    assert len(origins) == 1 and origins <= wanted
    (origin,) = origins
    for result in results:
        assert result.status == "complete"
        if result.request_id != origin:
            assert all(f.reused_from is not None for f in result.findings)
            assert f"from request {origin}" in result.text
            investigations = [u for step, u in result.usage_by_step.items()
                              if step not in ("triage", "synthesis")]
            assert all(u.cost_usd == 0 and u.calls == 0 for u in investigations)

    # The traces agree: 200 task records processed, 196 of them answered by reuse.
    await asyncio.sleep(1.0)  # agents export spans every 200 ms
    spans = [s for s in load_spans(default_traces_dir(stack.home))
             if s.name.startswith("process investigation.tasks.")
             and s.attributes.get("counterpoint.request_id") in wanted]
    by_event = {s.attributes["counterpoint.event_id"]: s for s in spans}
    assert len(by_event) == STORM * 4
    reused = [s for s in by_event.values()
              if s.attributes.get("counterpoint.reused_from.request_id") == origin]
    assert len(reused) == (STORM - 1) * 4


async def test_the_second_request_of_a_customer_references_the_first(
        stack: AgentStack) -> None:
    first = await _ticket(stack, "C-19", "My November invoice looks wrong, please check it")
    assert first.status == "complete"
    await _remembered(stack, first.request_id, "C-19")

    second = await _ticket(stack, "C-19", "I cannot log in to my account since this morning")

    assert second.history and second.history[0].request_id == first.request_id
    day = first.completed_at.date().isoformat()
    assert f"Previous request {first.request_id} on {day}" in second.text


async def test_cost_per_step_and_a_budget_below_the_request_cost(stack: AgentStack) -> None:
    body = "I was charged twice and I cannot log in"
    full = await _ticket(stack, "C-42", body + f" ({uuid.uuid4().hex[:6]})")
    assert full.status == "complete"
    assert set(full.models_by_step.values()) == {OFFLINE_MODEL}
    assert full.usage.cost_usd > 0
    assert full.usage.cost_usd == pytest.approx(sum(u.cost_usd
                                                    for u in full.usage_by_step.values()))

    budget = full.usage.cost_usd / 2
    limited = await _ticket(stack, "C-42", body + f" ({uuid.uuid4().hex[:6]})", budget=budget)

    assert limited.status == "partial"
    assert "budget" in limited.missing
    assert limited.budget is not None and limited.budget.ran_out
    assert "Budget ran out" in limited.text and f"${budget:.4f}" in limited.text
    assert limited.usage.cost_usd <= budget
    assert limited.usage.calls < full.usage.calls
