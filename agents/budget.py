"""Per-request budgets: every model call is priced, and none is made that would overrun.

A request's budget (USD) is set at intake (`budget_usd` on the ticket or alert, else
`COUNTERPOINT_REQUEST_BUDGET_USD`) and travels in its events as a `Budget`: the limit, what the
steps before spent, and what the receiving step may spend.

- Triage may spend the whole limit on its own call. It then splits what is left: half is
  shared equally by the investigations (their allowance), the other half is kept for synthesis,
  which may spend whatever the triage and the findings left of the limit.
- The investigations run in parallel in different processes and cannot see each other's spend;
  fixed allowances are what keep their sum under the limit without shared state.

Inside a step, `metering(allowance)` opens a meter for the current asyncio task, and
`MeteredProvider` (which wraps every agent's provider, see AgentContext) checks each call
against it: the estimate of the call (prompt size and `max_tokens` at the model's price) must
fit what is left, or the call is not made and `BudgetExhausted` is raised for the step to
report. A call that is made is priced from the tokens it really used, and that cost is what
the step reports and what later steps count as spent. Estimates err high, so the real spend
stays under the limit as long as the provider's `max_tokens` holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from opentelemetry import trace
from pydantic import BaseModel

from counterpoint.agents import metrics
from counterpoint.agents.cost import PriceTable
from counterpoint.agents.llm.offline import OFFLINE_MODEL
from counterpoint.agents.llm.provider import LLMProvider, LLMRequest, LLMResponse
from counterpoint.schemas.events import Budget, Generation

T = TypeVar("T", bound=BaseModel)

INVESTIGATION_SHARE: Final = 0.5  # of what triage leaves; the rest is kept for synthesis

# Who "answered" a step that did not call a model because its budget ran out.
NO_CALL: Final = Generation(provider="none", model="none (budget ran out)", offline=True)


class BudgetExhausted(Exception):
    """The next model call would overrun the step's allowance; it was not made."""

    def __init__(self, needed_usd: float, left_usd: float, limit_usd: float) -> None:
        super().__init__(f"the next model call would cost up to ${needed_usd:.6f} but "
                         f"${max(left_usd, 0.0):.6f} of ${limit_usd:.6f} is left")
        self.needed_usd = needed_usd
        self.left_usd = left_usd
        self.limit_usd = limit_usd


@dataclass
class Meter:
    limit_usd: float | None
    spent_usd: float = 0.0

    @property
    def left_usd(self) -> float:
        return float("inf") if self.limit_usd is None else self.limit_usd - self.spent_usd


_meter: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("counterpoint_meter",
                                                                      default=None)


@contextlib.contextmanager
def metering(limit_usd: float | None) -> Iterator[Meter]:
    """Count the model calls made inside against `limit_usd` (None: count, never refuse)."""
    meter = Meter(limit_usd)
    token = _meter.set(meter)
    try:
        yield meter
    finally:
        _meter.reset(token)


class MeteredProvider:
    """Prices every answer (`usage.cost_usd`) and refuses calls the current meter can't pay;
    counts calls, tokens, cost and refusals for `agent` (agents/metrics.py)."""

    def __init__(self, inner: LLMProvider, prices: PriceTable, agent: str = "") -> None:
        self.inner = inner
        self.prices = prices
        self.name = inner.name
        self.agent = agent

    def answering_models(self, model: str) -> list[str]:
        """Who may answer a call to `model`: the offline provider answers as itself; the
        anthropic provider asks a fallback model when `model` is overloaded."""
        if self.name == "offline":
            return [OFFLINE_MODEL]
        fallback = getattr(self.inner, "fallback", None)
        stand_in = fallback if isinstance(fallback, str) else (
            fallback.get(model) if isinstance(fallback, Mapping) else None)
        return [model, stand_in] if stand_in else [model]

    async def generate(self, request: LLMRequest[T], *, model: str) -> LLMResponse[T]:
        meter = _meter.get()
        if meter is not None and meter.limit_usd is not None:
            needed = max(self.prices.estimate(request, m) for m in self.answering_models(model))
            if needed > meter.left_usd:
                metrics.budget_refusals.add(1, {**self._attributes(model),
                                                "counterpoint.llm.task": request.task})
                trace.get_current_span().add_event("budget ran out", {
                    "counterpoint.llm.task": request.task, "counterpoint.estimate_usd": needed,
                    "counterpoint.left_usd": max(meter.left_usd, 0.0)})
                raise BudgetExhausted(needed, meter.left_usd, meter.limit_usd)
        started = time.monotonic()
        try:
            answer = await self.inner.generate(request, model=model)
        except Exception as exc:
            metrics.model_duration.record(time.monotonic() - started, {
                **self._attributes(model), "error.type": type(exc).__qualname__})
            raise
        cost = self.prices.cost(answer.usage, answer.generation.model)
        self._record(model, answer, cost, time.monotonic() - started)
        if meter is not None:
            meter.spent_usd += cost
        trace.get_current_span().add_event("llm cost", {
            "gen_ai.response.model": answer.generation.model, "counterpoint.cost_usd": cost,
            "counterpoint.llm.task": request.task})
        return LLMResponse(answer.output, answer.usage.model_copy(update={"cost_usd": cost}),
                           answer.generation)

    def _attributes(self, model: str) -> dict[str, str]:
        return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": self.name,
                "gen_ai.request.model": model, metrics.AGENT_ATTR: self.agent}

    def _record(self, model: str, answer: LLMResponse[Any], cost: float, seconds: float) -> None:
        attrs = self._attributes(model)
        attrs["gen_ai.response.model"] = answer.generation.model
        metrics.model_duration.record(seconds, attrs)
        metrics.token_usage.record(answer.usage.input_tokens,
                                   {**attrs, "gen_ai.token.type": "input"})
        metrics.token_usage.record(answer.usage.output_tokens,
                                   {**attrs, "gen_ai.token.type": "output"})
        metrics.model_cost.add(cost, attrs)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


def metered(provider: LLMProvider, prices: PriceTable, agent: str = "") -> MeteredProvider:
    if isinstance(provider, MeteredProvider):
        return provider
    return MeteredProvider(provider, prices, agent)


async def generate_within(provider: LLMProvider, request: LLMRequest[T], *, model: str,
                          limit_usd: float | None) -> LLMResponse[T] | BudgetExhausted:
    """One step's model call under its allowance; the refusal is returned, not raised."""
    with metering(limit_usd):
        try:
            return await provider.generate(request, model=model)
        except BudgetExhausted as exc:
            return exc


def request_limit(intake: Any, default_usd: float | None) -> float | None:
    """The budget an intake event asks for, else the configured default."""
    asked = getattr(intake, "budget_usd", None)
    return float(asked) if asked is not None else default_usd


def after_triage(limit_usd: float | None, triage_cost: float, investigations: int,
                 ran_out: list[str]) -> tuple[Budget, Budget]:
    """The decision's budget (for synthesis) and each investigation task's budget."""
    decision = Budget(limit_usd=limit_usd, spent_usd=triage_cost, ran_out=ran_out)
    if limit_usd is None:
        return decision, decision.model_copy(update={"allowance_usd": None})
    left = max(0.0, limit_usd - triage_cost)
    share = left * INVESTIGATION_SHARE / investigations if investigations else 0.0
    return decision, decision.model_copy(update={"allowance_usd": share})


def synthesis_allowance(budget: Budget | None, spent_usd: float) -> float | None:
    if budget is None or budget.limit_usd is None:
        return None
    return max(0.0, budget.limit_usd - spent_usd)


def budget_note(budget: Budget) -> str:
    steps = ", ".join(budget.ran_out)
    limit = budget.limit_usd if budget.limit_usd is not None else 0.0
    return (f"Budget ran out: this request's budget of ${limit:.4f} did not cover every model "
            f"call, so {steps} stopped without calling the model (spent ${budget.spent_usd:.4f}).")


def ran_out_steps(decision_budget: Budget | None, finding_steps: list[str],
                  synthesis_ran_out: bool) -> list[str]:
    """Every step of a request that skipped its model call for lack of budget, in order."""
    steps = list(decision_budget.ran_out) if decision_budget else []
    steps += finding_steps
    if synthesis_ran_out:
        steps.append("synthesis")
    return steps


def unaffordable_text(kind: str, summaries: list[str]) -> str:
    """What synthesis publishes when it cannot afford to compose: the findings, unedited."""
    what = "reply" if kind == "reply" else "runbook"
    lines = [f"No {what} was composed: the budget ran out before synthesis could call the "
             "model. What the investigations found:"]
    lines += [f" - {s}" for s in summaries] or [" (no findings)"]
    return "\n".join(lines)
