"""Cost accounting and per-request budgets: prices, estimates, and what a budget stops.

The offline provider is free at the default prices, so the pipeline tests price its model
(`offline-rules-v1`) at $1,000 per million tokens — a tenth of a cent per token — to make
budgets bite. Every agent runs on the in-memory bus through the same code as on Kafka.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from counterpoint.agents.budget import (
    INVESTIGATION_SHARE,
    BudgetExhausted,
    MeteredProvider,
    after_triage,
    metered,
    metering,
)
from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.cost import DEFAULT_PRICES, PriceConfigError, PriceTable
from counterpoint.agents.llm.offline import OFFLINE_MODEL, OfflineProvider
from counterpoint.agents.llm.outputs import TicketAssessment
from counterpoint.agents.llm.provider import LLMRequest, LLMResponse
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.memory import MemoryBus
from counterpoint.schemas.events import (
    Generation,
    Result,
    SimpleAlert,
    Subject,
    Ticket,
    Usage,
)
from counterpoint.topics.registry import DEADLETTER_NAME, INTAKE_TICKETS, SYNTHESIS_RESULTS
from tests.support.spy import Spy

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
PRICED_OFFLINE = json.dumps({OFFLINE_MODEL: {"input": 1000, "output": 1000}})


async def run_ticket(store: BusinessStore, *, budget: float | None = None,
                     default_budget: float | None = None) -> tuple[Result, Spy]:
    spy = Spy()
    ctx = AgentContext(store=store, provider=metered(spy, PriceTable.configured(PRICED_OFFLINE)),
                       defaults={"request_budget_usd": default_budget})
    bus = MemoryBus()
    for name in AGENT_NAMES:
        bus.add(build(name, ctx))
    ticket = orjson.loads((EXAMPLES / "ticket_dual_intent.json").read_bytes())
    if budget is not None:
        ticket["budget_usd"] = budget
    await bus.publish(INTAKE_TICKETS.name, orjson.dumps(ticket), key=b"T-1001")
    await bus.run_until_idle()
    assert bus.records(DEADLETTER_NAME) == []
    (record,) = bus.records(SYNTHESIS_RESULTS.name)
    return SYNTHESIS_RESULTS.decode(record.value or b""), spy


# --- prices ---------------------------------------------------------------------------------


def test_default_prices_name_both_claude_models_and_a_free_offline_model() -> None:
    table = PriceTable.default()
    assert table.price("claude-haiku-4-5").input == 1.0
    assert table.price("claude-sonnet-4-6").output == 15.0
    assert table.cost(Usage(input_tokens=10_000, output_tokens=10_000), OFFLINE_MODEL) == 0.0


def test_cost_prices_cache_reads_and_writes_apart_from_other_input() -> None:
    table = PriceTable.default()
    usage = Usage(input_tokens=1_000_000, cache_read_tokens=400_000, cache_write_tokens=100_000,
                  output_tokens=200_000)
    # 500k uncached at $3, 400k read at $0.30, 100k written at $3.75, 200k out at $15.
    expected = 0.5 * 3 + 0.4 * 0.30 + 0.1 * 3.75 + 0.2 * 15
    assert table.cost(usage, "claude-sonnet-4-6") == pytest.approx(expected)


def test_a_dated_snapshot_costs_what_its_model_costs_and_an_unknown_model_the_most() -> None:
    table = PriceTable.default()
    assert table.price("claude-haiku-4-5-20251001") == DEFAULT_PRICES["claude-haiku-4-5"]
    unknown = table.price("some-new-model")
    assert unknown.input == max(p.input for p in DEFAULT_PRICES.values())
    assert unknown.output == max(p.output for p in DEFAULT_PRICES.values())


def test_configured_prices_override_from_json_or_a_file(tmp_path: Path) -> None:
    table = PriceTable.configured('{"claude-haiku-4-5": {"input": 2, "output": 8}}')
    assert table.price("claude-haiku-4-5").input == 2
    assert table.price("claude-haiku-4-5").read == pytest.approx(0.2)  # a tenth by default
    assert table.price("claude-sonnet-4-6") == DEFAULT_PRICES["claude-sonnet-4-6"]
    path = tmp_path / "prices.json"
    path.write_text('{"my-model": {"input": 4, "output": 20, "cache_read": 0.5}}')
    assert PriceTable.configured(str(path)).price("my-model").read == 0.5


@pytest.mark.parametrize(("setting", "named"), [
    ('{"m": {"input": -1, "output": 1}}', "COUNTERPOINT_PRICES['m']: input"),
    ('{"m": {"input": 1}}', "output"),
    ('{"m": {"input": 1, "output": 1, "colour": 3}}', "colour"),
    ("[1, 2]", "expected an object"),
    ("{nope", "invalid JSON"),
    ("/no/such/prices.json", "not JSON and not a readable file"),
])
def test_bad_price_configuration_names_the_problem(setting: str, named: str) -> None:
    with pytest.raises(PriceConfigError, match="COUNTERPOINT_PRICES") as caught:
        PriceTable.configured(setting)
    assert named in str(caught.value)


# --- the metered provider -------------------------------------------------------------------


def _request() -> LLMRequest[TicketAssessment]:
    subject = Subject(kind="ticket", source_id="T-1", title="Refund", text="Refund me please")
    return LLMRequest(task="triage.ticket", system="sys", output=TicketAssessment,
                      content="Refund me please", context={"subject": subject}, max_tokens=500)


async def test_answers_are_priced_at_the_model_that_answered() -> None:
    prices = PriceTable.configured(PRICED_OFFLINE)
    provider = MeteredProvider(OfflineProvider(), prices)
    with metering(None) as meter:
        answer = await provider.generate(_request(), model="claude-haiku-4-5")
    assert answer.generation.model == OFFLINE_MODEL
    assert answer.usage.cost_usd == pytest.approx(
        (answer.usage.input_tokens + answer.usage.output_tokens) / 1000)
    assert meter.spent_usd == answer.usage.cost_usd


async def test_a_call_whose_estimate_does_not_fit_is_not_made() -> None:
    prices = PriceTable.configured(PRICED_OFFLINE)
    spy = Spy()
    provider = MeteredProvider(spy, prices)
    needed = prices.estimate(_request(), OFFLINE_MODEL)
    assert needed >= 500 / 1000  # max_tokens of output at least
    with metering(needed * 0.99), pytest.raises(BudgetExhausted, match="would cost up to"):
        await provider.generate(_request(), model="claude-haiku-4-5")
    assert spy.tasks == []
    with metering(needed) as meter:
        await provider.generate(_request(), model="claude-haiku-4-5")
    assert spy.tasks == ["triage.ticket"]
    assert 0 < meter.spent_usd <= needed  # the estimate errs high


async def test_a_meter_counts_every_call_of_a_step_against_one_allowance() -> None:
    prices = PriceTable.configured(PRICED_OFFLINE)
    provider = MeteredProvider(Spy(), prices)
    needed = prices.estimate(_request(), OFFLINE_MODEL)
    limit = needed * 1.5
    calls = 0
    with metering(limit) as meter, pytest.raises(BudgetExhausted):
        for _ in range(100):  # an agentic loop would keep asking
            await provider.generate(_request(), model="x")
            calls += 1
    assert 1 <= calls < 100
    assert meter.spent_usd <= limit
    assert meter.spent_usd + needed > limit  # it stopped only when the next could overrun


def test_investigation_allowances_leave_synthesis_its_share() -> None:
    decision, task = after_triage(1.0, 0.2, 4, [])
    assert decision.spent_usd == 0.2 and decision.allowance_usd is None
    assert task.allowance_usd == pytest.approx(0.8 * INVESTIGATION_SHARE / 4)
    _, unlimited = after_triage(None, 0.2, 4, [])
    assert unlimited.allowance_usd is None


# --- budgets through the pipeline -----------------------------------------------------------


async def test_cost_is_summed_per_request_with_the_model_of_every_step(
        store: BusinessStore) -> None:
    result, spy = await run_ticket(store)
    assert result.status == "complete"
    assert set(result.models_by_step) == set(result.usage_by_step)
    assert set(result.models_by_step.values()) == {OFFLINE_MODEL}
    assert all(u.cost_usd > 0 for u in result.usage_by_step.values())
    assert result.usage.cost_usd == pytest.approx(
        sum(u.cost_usd for u in result.usage_by_step.values()))
    tokens = result.usage.input_tokens + result.usage.output_tokens
    assert result.usage.cost_usd == pytest.approx(tokens / 1000)
    assert len(spy.tasks) == result.usage.calls == 5


async def test_a_budget_smaller_than_the_request_cost_yields_a_partial_result_naming_it(
        store: BusinessStore) -> None:
    full, full_spy = await run_ticket(store)
    budget = full.usage.cost_usd / 2
    result, spy = await run_ticket(store, budget=budget)

    assert result.status == "partial"
    assert "budget" in result.missing
    assert result.budget is not None and result.budget.limit_usd == budget
    assert result.budget.ran_out  # the steps that skipped the model, named
    assert "Budget ran out" in result.text and f"${budget:.4f}" in result.text
    for step in result.budget.ran_out:
        assert step in result.text
    assert result.usage.cost_usd <= budget
    assert result.budget.spent_usd == pytest.approx(result.usage.cost_usd)
    assert len(spy.tasks) < len(full_spy.tasks)


async def test_a_budget_too_small_for_investigations_still_gets_a_reply_that_says_so(
        store: BusinessStore) -> None:
    # Enough for triage and synthesis at their estimates, not for the investigators' share.
    result, spy = await run_ticket(store, budget=3.0)
    assert spy.tasks == ["triage.ticket", "synthesis.reply"]
    assert result.status == "partial"
    assert result.budget is not None
    assert all(step.split(":")[0] in {"billing", "account", "knowledge"}
               for step in result.budget.ran_out) and len(result.budget.ran_out) == 3
    assert all(f.summary.startswith("Not investigated: the request's budget ran out")
               for f in result.findings)
    assert result.models_by_step["billing:charges and invoices"] == "none (budget ran out)"
    assert result.generation.model == OFFLINE_MODEL
    assert result.usage.cost_usd <= 3.0


async def test_a_zero_budget_calls_no_model_at_all(store: BusinessStore) -> None:
    result, spy = await run_ticket(store, budget=0.0)
    assert spy.tasks == []
    assert result.status == "partial" and result.usage.cost_usd == 0
    assert result.budget is not None and result.budget.ran_out == ["triage", "synthesis"]
    assert result.generation == Generation(provider="none", model="none (budget ran out)",
                                           offline=True)
    assert "No reply was composed: the budget ran out" in result.text


async def test_the_ticket_budget_overrides_the_configured_default(store: BusinessStore) -> None:
    limited, _ = await run_ticket(store, default_budget=0.0)
    assert limited.status == "partial"
    generous, _ = await run_ticket(store, budget=1000.0, default_budget=0.0)
    assert generous.status == "complete"
    assert generous.budget is not None and generous.budget.limit_usd == 1000.0


@pytest.mark.parametrize("intake", [Ticket, SimpleAlert])
def test_a_negative_budget_is_refused_naming_the_field(intake: type[BaseModel]) -> None:
    fields = {"id": "X-1", "body": "hi", "service": "api", "summary": "down"}
    with pytest.raises(ValidationError) as caught:
        intake.model_validate({**fields, "budget_usd": -1})
    assert caught.value.errors()[0]["loc"] == ("budget_usd",)
    assert intake.model_validate({**fields, "budget_usd": 0.25}).budget_usd == 0.25  # type: ignore[attr-defined]


def test_an_estimate_covers_the_fallback_model_too() -> None:
    class Claude:
        name = "anthropic"
        fallback = {"claude-haiku-4-5": "claude-sonnet-4-6"}

        async def generate(self, request: LLMRequest[Any], *, model: str) -> LLMResponse[Any]:
            raise AssertionError("not called")

    provider = MeteredProvider(Claude(), PriceTable.default())
    assert provider.answering_models("claude-haiku-4-5") == ["claude-haiku-4-5",
                                                             "claude-sonnet-4-6"]
    assert provider.answering_models("claude-sonnet-4-6") == ["claude-sonnet-4-6"]
    assert MeteredProvider(OfflineProvider(), PriceTable.default()).answering_models(
        "claude-haiku-4-5") == [OFFLINE_MODEL]


def test_claude_usage_keeps_cache_reads_and_writes_apart_for_pricing() -> None:
    from types import SimpleNamespace

    from counterpoint.agents.llm.anthropic import usage_of

    message = SimpleNamespace(usage=SimpleNamespace(
        input_tokens=100, output_tokens=50, cache_read_input_tokens=1000,
        cache_creation_input_tokens=200))
    usage = usage_of(message)  # type: ignore[arg-type]
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        1300, 1000, 200)
    # 100 uncached at $1, 1000 read at $0.10, 200 written at $1.25, 50 out at $5 (haiku).
    assert PriceTable.default().cost(usage, "claude-haiku-4-5") == pytest.approx(
        (100 * 1 + 1000 * 0.1 + 200 * 1.25 + 50 * 5) / 1e6)
