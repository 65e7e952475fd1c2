"""Sales outreach: lead -> research -> score -> write -> QA gate, which sends a draft back for
at most one rewrite (LoopBack) before it is approved, or held for a person."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, Field

from counterpoint.kit import (
    Agent,
    AgentContext,
    Emit,
    Incoming,
    LLMRequest,
    LoopBack,
    intake,
    quote,
    topic,
)

M = TypeVar("M", bound=BaseModel)


class Lead(BaseModel):
    id: str
    company: str
    employees: int = Field(ge=1)


class Research(BaseModel):
    lead: Lead | None = None
    summary: str
    pains: list[str] = Field(min_length=1)


class Draft(BaseModel):
    lead: Lead | None = None
    score: int = 0
    subject: str
    body: str
    round: int = 1  # the QA gate's bound travels in the event
    feedback: str = ""


class Verdict(BaseModel):
    passed: bool
    feedback: str


class Outreach(BaseModel):
    lead_id: str
    status: str  # approved, held (QA failed after the rewrite) or skipped (score too low)
    score: int
    email: Draft | None = None


LEADS = intake("sales.leads", Lead)
RESEARCH = topic("sales.research", Research)
DRAFTS = topic("sales.drafts", Draft)
REWRITES = topic("sales.rewrites", Draft)
OUTREACH = topic("sales.outreach", Outreach)
QA = LoopBack(rewrites=1)


async def ask(ctx: AgentContext, task: str, data: BaseModel, out: type[M], **stamp: object) -> M:
    answer = await ctx.provider.generate(LLMRequest(
        task=task, system=f"You do the {task} step of B2B sales outreach.",
        content=quote("input", data.model_dump_json()), output=out), model=ctx.model_for(ctx.name))
    return answer.output.model_copy(update=stamp)


def researcher(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[RESEARCH])

    @agent.handles(LEADS)
    async def on_lead(event: Incoming[Lead]) -> list[Emit]:
        found = await ask(ctx, "sales.research", event.data, Research, lead=event.data)
        return [Emit(RESEARCH, found, key=event.request_id)]

    return agent


def writer(ctx: AgentContext) -> Agent:
    """Scores a lead by rule (no model), writes to the ones worth it, rewrites what QA returns."""
    least = int(ctx.settings.get("min_score", 30))
    agent = Agent(ctx.name, emits=[DRAFTS, OUTREACH])

    @agent.handles(RESEARCH)
    async def on_research(event: Incoming[Research]) -> list[Emit]:
        lead = event.data.lead or Lead(id="?", company="?", employees=1)
        score = min(100, lead.employees // 10 + 20 * len(event.data.pains))
        if score < least:
            skipped = Outreach(lead_id=lead.id, status="skipped", score=score)
            return [Emit(OUTREACH, skipped, key=event.request_id)]
        draft = await ask(ctx, "sales.write", event.data, Draft, lead=lead, score=score)
        return [Emit(DRAFTS, draft, key=event.request_id)]

    @agent.handles(REWRITES)
    async def on_rewrite(event: Incoming[Draft]) -> list[Emit]:
        d = event.data
        draft = await ask(ctx, "sales.write", d, Draft, lead=d.lead, score=d.score, round=d.round)
        return [Emit(DRAFTS, draft, key=event.request_id)]

    return agent


def qa(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[REWRITES, OUTREACH])

    @agent.handles(DRAFTS)
    async def on_draft(event: Incoming[Draft]) -> list[Emit]:
        d, key = event.data, event.request_id
        lead = d.lead or Lead(id="?", company="?", employees=1)
        verdict = await ask(ctx, "sales.qa", d, Verdict)
        # A rule on top of the model's verdict: the email must name the company.
        passed = verdict.passed and lead.company.lower() in d.body.lower()

        def done(status: str) -> list[Emit]:
            result = Outreach(lead_id=lead.id, status=status, score=d.score, email=d)
            return [Emit(OUTREACH, result, key=key)]

        def again(round_: int) -> list[Emit]:
            back = d.model_copy(update={"round": round_, "feedback": verdict.feedback})
            return [Emit(REWRITES, back, key=key)]

        return QA.route(d.round, passed, accept=lambda: done("approved"), again=again,
                        give_up=lambda: done("held"))

    return agent
