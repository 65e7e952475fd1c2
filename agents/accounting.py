"""What a request cost, step by step, and what its budget stopped: synthesis's bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from counterpoint.agents.budget import (
    NO_CALL,
    BudgetExhausted,
    budget_note,
    generate_within,
    ran_out_steps,
    synthesis_allowance,
    unaffordable_text,
)
from counterpoint.agents.llm.outputs import Composition
from counterpoint.agents.llm.provider import LLMProvider, LLMRequest, LLMResponse
from counterpoint.schemas.events import Budget, Finding, TriageDecision, Usage

T = TypeVar("T", bound=BaseModel)


def spent_before_synthesis(decision: TriageDecision, findings: list[Finding]) -> float:
    return decision.usage.cost_usd + sum(f.usage.cost_usd for f in findings)


async def compose_within_budget(provider: LLMProvider, request: LLMRequest[Composition], *,
                                model: str, decision: TriageDecision,
                                findings: list[Finding]) -> LLMResponse[Composition]:
    """Synthesis's model call under what the request's budget has left; when that is not
    enough, the findings unedited and no call (`NO_CALL`)."""
    allowance = synthesis_allowance(decision.budget,
                                    spent_before_synthesis(decision, findings))
    answer = await generate_within(provider, request, model=model, limit_usd=allowance)
    if not isinstance(answer, BudgetExhausted):
        return answer
    kind = "reply" if decision.subject.kind == "ticket" else "runbook"
    text = unaffordable_text(kind, [f"{f.skill}: {f.summary}" for f in findings])
    return LLMResponse(Composition(text=text, priority=decision.priority), Usage(), NO_CALL)


@dataclass(frozen=True)
class Accounting:
    usage: Usage
    usage_by_step: dict[str, Usage]
    models_by_step: dict[str, str]
    budget: Budget | None
    ran_out: list[str]

    def text(self, composed: str) -> str:
        """The composed text, with a closing line when the budget stopped any step."""
        if self.budget is None or not self.ran_out:
            return composed
        return f"{composed}\n\n{budget_note(self.budget)}"

    def missing(self, missing: list[str]) -> list[str]:
        return missing + (["budget"] if self.ran_out else [])


def account(decision: TriageDecision, findings: list[Finding],
            answer: LLMResponse[Composition]) -> Accounting:
    steps: dict[str, TriageDecision | Finding] = {
        "triage": decision, **{f"{f.skill}:{f.focus}": f for f in findings}}
    by_step = {**{step: e.usage for step, e in steps.items()}, "synthesis": answer.usage}
    models = {**{step: e.generation.model for step, e in steps.items()},
              "synthesis": answer.generation.model}
    ran_out = ran_out_steps(decision.budget, [f"{f.skill}:{f.focus}" for f in findings
                                              if f.budget_ran_out],
                            answer.generation == NO_CALL)
    total = sum(by_step.values(), Usage())
    budget = decision.budget.model_copy(update={
        "spent_usd": total.cost_usd, "allowance_usd": None, "ran_out": ran_out,
    }) if decision.budget else None
    return Accounting(total, by_step, models, budget, ran_out)
