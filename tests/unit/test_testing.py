"""counterpoint.testing as a user would write tests with it: a project's agents in memory
with a scripted model."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from counterpoint.kit import Agent, AgentContext, Emit, Incoming, LLMRequest, intake, topic
from counterpoint.testing import ScriptedModel, TestPipeline

WORDS = Path(__file__).resolve().parents[1] / "support" / "words_project" / "counterpoint.toml"


async def test_a_projects_agents_run_in_memory_as_they_would_in_processes() -> None:
    async with TestPipeline(WORDS) as pipeline:
        request = await pipeline.publish("words.phrases", {"id": "P-1", "text": "hi there"})
        (counted,) = pipeline.results(request)
        assert (counted.text, counted.words) == ("HI THERE!", 2)  # the project's settings
        assert pipeline.agents["counter"].agent.group_id == "words.counter"

        raw = await pipeline.publish("words.phrases", b'{"id": "P-2", "text": "raw"}', raw=True)
        assert [c.text for c in pipeline.results(raw)] == ["RAW!"]

        await pipeline.publish("words.phrases", {"id": "P-3"})  # no text: a dead letter
        (letter,) = pipeline.deadletters()
        assert (letter.reason, letter.agent) == ("schema-violation", "shouter")


class Lead(BaseModel):
    company: str


class Pitch(BaseModel):
    lead: str
    text: str


class Draft(BaseModel):
    text: str
    score: int = 0


LEADS = intake("t.leads", Lead)
PITCHES = topic("t.pitches", Pitch)


def writer(ctx: AgentContext) -> Agent:
    agent = Agent(ctx.name, emits=[PITCHES])

    @agent.handles(LEADS)
    async def on_lead(event: Incoming[Lead]) -> list[Emit]:
        answer = await ctx.provider.generate(LLMRequest(
            task="pitch", system="Write a pitch.", content=event.data.company, output=Draft),
            model=ctx.model_for(agent.name))
        note = await ctx.provider.generate(LLMRequest(
            task="unscripted", system="s", content="c", output=Draft), model="m")
        return [Emit(PITCHES, Pitch(lead=event.data.company, text=answer.output.text + " | "
                                    + note.output.text), key=event.request_id)]

    return agent


async def test_a_scripted_model_answers_per_task_and_keeps_every_call() -> None:
    model = ScriptedModel({"pitch": [Draft(text="first"), {"text": "second"}]})
    async with TestPipeline(agents=[f"{__name__}:writer"], results=["t.pitches"],
                            model=model) as pipeline:
        one = await pipeline.publish(LEADS, Lead(company="Acme"))
        two = await pipeline.publish(LEADS, {"company": "Globex"})
        (first,), (second,) = pipeline.results(one), pipeline.results(two)
    assert first.text.startswith("first | ") and second.text.startswith("second | ")
    # An unscripted task falls back to the offline provider: a labelled placeholder.
    assert "OFFLINE PLACEHOLDER" in first.text
    assert model.tasks() == ["pitch", "unscripted", "pitch", "unscripted"]
    assert model.calls[0].content == "Acme"


async def test_a_script_of_the_wrong_shape_fails_the_test_not_silently() -> None:
    model = ScriptedModel({"pitch": {"txt": "typo"}})
    async with TestPipeline(agents=[f"{__name__}:writer"], model=model) as pipeline:
        await pipeline.publish(LEADS, Lead(company="Acme"))
        (letter,) = pipeline.deadletters()
    assert letter.reason == "handler-error" and "text" in letter.message


def test_a_topic_no_agent_declares_is_named() -> None:
    pipeline = TestPipeline(agents=[f"{__name__}:writer"])
    with pytest.raises(KeyError, match="no agent here declares topic 'nope'"):
        pipeline.topic("nope")
