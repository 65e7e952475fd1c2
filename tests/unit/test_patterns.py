"""The choreography patterns as a user's agents use them (agents/patterns/): a fan-in join
with a deadline and partial results, a bounded loop-back, an approval gate."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.kit import (
    Agent,
    AgentContext,
    ApprovalGate,
    Emit,
    FanIn,
    Gathering,
    Incoming,
    LoopBack,
    ProposedAction,
    Refused,
    intake,
    topic,
)
from counterpoint.testing import TestPipeline
from counterpoint.topics.registry import APPROVALS_DECIDED, APPROVALS_REQUESTED


class Brief(BaseModel):
    id: str
    checks: list[str]


class Check(BaseModel):
    brief: str
    kind: str
    ok: bool


class Report(BaseModel):
    brief: str
    passed: list[str]
    missing: list[str]


BRIEFS = intake("p.briefs", Brief)
PLANS = topic("p.plans", Brief)
CHECKS = topic("p.checks", Check)
REPORTS = topic("p.reports", Report)


def planner(ctx: AgentContext) -> Agent:
    """Fans out: the plan, and one check per kind (each kind answered below)."""
    agent = Agent(ctx.name, emits=[PLANS, CHECKS])

    @agent.handles(BRIEFS)
    async def on_brief(event: Incoming[Brief]) -> list[Emit]:
        b = event.data
        return [Emit(PLANS, b, key=b.id),
                *(Emit(CHECKS, Check(brief=b.id, kind=k, ok=True), key=b.id, tag=k)
                  for k in b.checks if k != "slow")]

    return agent


def reporter(ctx: AgentContext) -> Agent:
    """Fans in: one report per brief, when every check is in or at the deadline."""
    agent = Agent(ctx.name, emits=[REPORTS])

    async def report(g: Gathering[Brief, Check]) -> list[Emit]:
        assert g.plan is not None
        return [Emit(REPORTS, Report(brief=g.key, passed=sorted(g.parts),
                                     missing=join.missing(g)), key=g.key)]

    join: FanIn[Brief, Check] = FanIn(
        agent, plan=PLANS, part=CHECKS, plan_key=lambda b: b.id, part_key=lambda c: c.brief,
        expects=lambda b: b.checks, part_id=lambda c: c.kind, compose=report,
        wait=timedelta(seconds=30), replay_grace=timedelta(0))
    return agent


async def test_fan_in_composes_once_when_every_part_is_in() -> None:
    async with TestPipeline(agents=[f"{__name__}:planner", f"{__name__}:reporter"],
                            results=["p.reports"]) as pipeline:
        assert pipeline.agents["reporter"].agent.assignor == "range"  # a join: co-partitioned
        rid = await pipeline.publish(BRIEFS, Brief(id="B-1", checks=["seo", "facts"]))
        assert pipeline.results(rid) == [Report(brief="B-1", passed=["facts", "seo"],
                                                missing=[])]
        await pipeline.tick()  # nothing left pending: the deadline adds nothing
        assert len(pipeline.events(REPORTS)) == 1


async def test_fan_in_publishes_a_partial_result_at_the_deadline_even_after_a_crash() -> None:
    async with TestPipeline(agents=[f"{__name__}:planner", f"{__name__}:reporter"]) as pipeline:
        await pipeline.publish(BRIEFS, Brief(id="B-2", checks=["seo", "slow"]))
        assert pipeline.events(REPORTS) == []  # waiting for "slow"
        # The reporter dies before the deadline: its held inputs are redelivered to the new
        # instance, which rebuilds the join from them.
        pipeline.restart("reporter")
        await pipeline.run()
        assert pipeline.events(REPORTS) == []  # rebuilt, still waiting
        await _expire(pipeline)
        assert pipeline.events(REPORTS) == [Report(brief="B-2", passed=["seo"],
                                                   missing=["slow"])]


async def _expire(pipeline: TestPipeline) -> None:
    """Let the reporter's deadlines pass (move them to now), then tick."""
    from counterpoint.schemas.envelope import now

    for _, fn in pipeline.agents["reporter"].agent.periodic:
        join = fn.__self__  # type: ignore[attr-defined]
        for g in join.pending.values():
            g.due = now()
    await pipeline.tick()


class Draft(BaseModel):
    lead: str
    text: str
    round: int = 1


class Verdict(BaseModel):
    lead: str
    text: str
    rounds: int
    sent: bool


LEADS = intake("p.leads", Draft)
DRAFTS = topic("p.drafts", Draft)
REWRITES = topic("p.rewrites", Draft)
OUTCOMES = topic("p.outcomes", Verdict)
QA = LoopBack(rewrites=1)


def writer(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[DRAFTS])

    async def write(event: Incoming[Draft]) -> list[Emit]:
        d = event.data
        text = d.text if d.round == 1 else d.text + " (rewritten)"
        return [Emit(DRAFTS, d.model_copy(update={"text": text}), key=d.lead)]

    agent.handles(LEADS)(write)
    agent.handles(REWRITES)(write)
    return agent


def qa(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[REWRITES, OUTCOMES])

    @agent.handles(DRAFTS)
    async def review(event: Incoming[Draft]) -> list[Emit]:
        d = event.data
        passed = "good" in d.text

        def outcome(sent: bool) -> list[Emit]:
            return [Emit(OUTCOMES, Verdict(lead=d.lead, text=d.text, rounds=d.round, sent=sent),
                         key=d.lead)]

        return QA.route(d.round, passed, accept=lambda: outcome(True),
                        again=lambda n: [Emit(REWRITES, d.model_copy(update={"round": n}),
                                              key=d.lead)],
                        give_up=lambda: outcome(False))

    return agent


async def test_the_loop_back_sends_work_back_at_most_n_times() -> None:
    async with TestPipeline(agents=[f"{__name__}:writer", f"{__name__}:qa"],
                            results=["p.outcomes"]) as pipeline:
        good = await pipeline.publish(LEADS, Draft(lead="L-1", text="good pitch"))
        bad = await pipeline.publish(LEADS, Draft(lead="L-2", text="meh"))
        fixed = await pipeline.publish(LEADS, Draft(lead="L-3", text="meh good"))
        assert [(v.rounds, v.sent) for v in pipeline.results(good)] == [(1, True)]
        # Failed, went back once, failed again: given up, never a third round.
        (verdict,) = pipeline.results(bad)
        assert (verdict.rounds, verdict.sent, verdict.text) == (2, False, "meh (rewritten)")
        assert [(v.rounds, v.sent) for v in pipeline.results(fixed)] == [(1, True)]
        assert len(pipeline.events(REWRITES)) == 1


async def test_the_approval_gate_holds_risky_actions_for_a_person() -> None:
    policy = ApprovalPolicy.configured({"send_email": "medium", "tag_lead": "low"})
    gate = ApprovalGate(AgentContext(provider=OfflineProvider(), approvals=policy))
    agent = Agent("proposer", emits=[*gate.emits])

    @agent.handles(LEADS)
    async def on_lead(event: Incoming[Draft]) -> list[Emit]:
        return gate.propose(event, [
            ProposedAction(action="send_email", target=event.data.lead, risk="low"),
            ProposedAction(action="tag_lead", target=event.data.lead, risk="high"),
            ProposedAction(action="wire_money", target=event.data.lead, risk="low")],
            title="outreach")

    async with TestPipeline(agents=[agent]) as pipeline:
        rid = await pipeline.publish(LEADS, Draft(lead="L-9", text="x"))
        waiting = pipeline.events(APPROVALS_REQUESTED, rid)
        decided = pipeline.events(APPROVALS_DECIDED, rid)
    # Risk comes from configuration, not from the proposer; unknown kinds are high risk.
    assert sorted((r.action.action, r.action.risk) for r in waiting) == [
        ("send_email", "medium"), ("wire_money", "high")]
    (approval,) = decided
    assert (approval.action.action, approval.via, approval.decision) == ("tag_lead", "policy",
                                                                   "approved")
    assert gate.approved(approval)  # signed by this process's keys, matching its proposal
    # Whoever can write to the topic cannot make an action run: a decision edited to approve
    # another action no longer matches its signed proposal, or its signature.
    forged = approval.model_copy(update={"action": waiting[0].action})
    with pytest.raises(Refused):
        gate.approved(forged)
