"""Content pipeline: brief -> research -> draft -> SEO score and fact-check in parallel ->
editor. Each step asks the model, except the editor: it joins a draft's two reviews (FanIn)
and publishes once both are in, or at its deadline with what came."""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from pydantic import BaseModel, Field

from counterpoint.kit import (
    Agent,
    AgentContext,
    Emit,
    FanIn,
    Gathering,
    Incoming,
    LLMRequest,
    intake,
    quote,
    topic,
)

M = TypeVar("M", bound=BaseModel)


class Brief(BaseModel):
    id: str
    topic: str


class Notes(BaseModel):
    brief_id: str = ""
    points: list[str] = Field(min_length=1)


class Draft(BaseModel):
    brief_id: str = ""
    title: str
    body: str


class Review(BaseModel):
    brief_id: str = ""
    kind: str = ""  # "seo" or "facts"
    score: int = Field(ge=0, le=100)
    notes: str


class Article(BaseModel):
    brief_id: str
    title: str
    body: str
    scores: dict[str, int]
    missing: list[str]


BRIEFS = intake("content.briefs", Brief)
NOTES = topic("content.notes", Notes)
DRAFTS = topic("content.drafts", Draft, key="brief_id")  # the editor joins these two
REVIEWS = topic("content.reviews", Review, key="brief_id")
PUBLISHED = topic("content.published", Article)


async def ask(ctx: AgentContext, task: str, data: BaseModel, out: type[M], **stamp: str) -> M:
    answer = await ctx.provider.generate(LLMRequest(
        task=task, system=f"You do the {task} step of a content pipeline.",
        content=quote("input", data.model_dump_json()), output=out), model=ctx.model_for(ctx.name))
    return answer.output.model_copy(update=stamp)


def researcher(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[NOTES])

    @agent.handles(BRIEFS)
    async def on_brief(event: Incoming[Brief]) -> list[Emit]:
        notes = await ask(ctx, "content.research", event.data, Notes, brief_id=event.data.id)
        return [Emit(NOTES, notes, key=notes.brief_id)]

    return agent


def drafter(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[DRAFTS])

    @agent.handles(NOTES)
    async def on_notes(event: Incoming[Notes]) -> list[Emit]:
        draft = await ask(ctx, "content.draft", event.data, Draft, brief_id=event.data.brief_id)
        return [Emit(DRAFTS, draft, key=draft.brief_id)]

    return agent


def reviewer(ctx: AgentContext) -> Agent:
    """Two agents from one factory: the entry's name says which review (seo or facts)."""
    agent = Agent(ctx.name, emits=[REVIEWS])

    @agent.handles(DRAFTS)
    async def on_draft(event: Incoming[Draft]) -> list[Emit]:
        review = await ask(ctx, f"content.{ctx.name}", event.data, Review,
                           brief_id=event.data.brief_id, kind=ctx.name)
        return [Emit(REVIEWS, review, key=review.brief_id)]

    return agent


def editor(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[PUBLISHED])

    async def publish(g: Gathering[Draft, Review]) -> list[Emit]:
        assert g.plan is not None
        article = Article(brief_id=g.key, title=g.plan.title, body=g.plan.body,
                          scores={k: r.score for k, r in g.parts.items()}, missing=join.missing(g))
        return [Emit(PUBLISHED, article, key=g.key)]

    join: FanIn[Draft, Review] = FanIn(
        agent, plan=DRAFTS, part=REVIEWS, plan_key=lambda d: d.brief_id,
        part_key=lambda r: r.brief_id, expects=lambda d: ["seo", "facts"],
        part_id=lambda r: r.kind, compose=publish,
        wait=timedelta(seconds=float(ctx.settings.get("wait_s", 30))))
    return agent
