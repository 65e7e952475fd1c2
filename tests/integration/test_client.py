"""The Python SDK against a real broker and one OS process per agent."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import aclosing
from typing import Any

import orjson
import pytest

from counterpoint.client import Counterpoint, RequestTimeout
from counterpoint.infra.demo import example
from counterpoint.schemas.events import AlertmanagerWebhook, Result, Ticket
from tests.integration.conftest import AgentStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def ticket(**overrides: Any) -> Ticket:
    body = orjson.loads(example("ticket_dual_intent.json"))
    body.update({"id": f"T-{uuid.uuid4().hex[:8]}", **overrides})
    return Ticket.model_validate(body)


def alert() -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(example("alert_alertmanager.json"))
    body["alerts"][0]["fingerprint"] = uuid.uuid4().hex[:16]
    return body


async def test_request_round_trip_for_a_ticket(pipeline: AgentStack) -> None:
    sent = ticket()
    async with Counterpoint(pipeline.bootstrap) as cp:
        result = await cp.request(sent, timeout=60)

    assert result.kind == "reply" and result.status == "complete", result
    assert result.source_id == sent.id
    assert {"billing", "account"} <= {f.skill for f in result.findings}
    billing = next(f for f in result.findings if f.skill == "billing")
    assert any("INV-2291" in fact.text for fact in billing.facts)


async def test_request_for_an_alert_gets_a_runbook(pipeline: AgentStack) -> None:
    body = alert()
    async with Counterpoint(pipeline.bootstrap) as cp:
        result = await cp.request(body, kind="alert", timeout=60)
        # A model works as well, its kind taken from its type.
        again = alert()
        model_result = await cp.request(AlertmanagerWebhook.model_validate(again), timeout=60)

    assert result.kind == "runbook" and result.status == "complete"
    assert result.source_id == body["alerts"][0]["fingerprint"]
    assert any(f.skill == "knowledge" for f in result.findings)
    assert model_result.source_id == again["alerts"][0]["fingerprint"]


async def test_concurrent_requests_on_one_client_each_get_their_own_result(
        pipeline: AgentStack) -> None:
    first, second = ticket(), ticket(customer_id=None)
    async with Counterpoint(pipeline.bootstrap) as cp:
        a, b = await asyncio.gather(cp.request(first, timeout=60),
                                    cp.request(second, timeout=60))
        assert cp._waiting == {}  # nothing left registered
    assert (a.source_id, b.source_id) == (first.id, second.id)
    assert a.request_id != b.request_id


async def test_results_from_the_beginning_yield_each_result_once(pipeline: AgentStack) -> None:
    async with Counterpoint(pipeline.bootstrap) as cp:
        receipts = [await cp.publish_ticket(ticket()) for _ in range(2)]
        wanted = {r.request_id for r in receipts}
        # wait_for resumes a request published earlier (here by publish_ticket).
        waited = await asyncio.gather(*(cp.wait_for(r, timeout=60) for r in wanted))
        assert {w.request_id for w in waited} == wanted

        seen: list[Result] = []

        async def read() -> None:
            async with aclosing(cp.results(from_beginning=True, request_ids=wanted)) as stream:
                async for result in stream:
                    seen.append(result)

        # The stream never ends by itself: read for a while, then check nothing repeated.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read(), timeout=5)
    assert sorted(r.request_id for r in seen) == sorted(wanted)


async def test_a_request_that_times_out_names_its_request_id(pipeline: AgentStack) -> None:
    async with Counterpoint(pipeline.bootstrap) as cp:
        with pytest.raises(RequestTimeout) as caught:
            await cp.request(ticket(), timeout=0.001)
        request_id = caught.value.request_id
        assert request_id in str(caught.value)
        # The request was sent and still runs: its result can be picked up afterwards.
        result = await cp.wait_for(request_id, timeout=60)
    assert result.request_id == request_id
