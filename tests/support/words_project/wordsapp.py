"""A two-agent project of a user's own, for the platform tests: phrases -> shouted -> counted.

`shouter` is a factory with settings of its own; `counter` is a module-level Agent.
"""

from __future__ import annotations

from pydantic import BaseModel

from counterpoint.kit import Agent, AgentContext, Emit, Incoming, intake, topic


class Phrase(BaseModel):
    id: str
    text: str


class Shouted(BaseModel):
    id: str
    text: str


class Counted(BaseModel):
    id: str
    text: str
    words: int


PHRASES = intake("words.phrases", Phrase)
SHOUTED = topic("words.shouted", Shouted, partitions=2)
COUNTED = topic("words.counted", Counted)


class ShouterSettings(BaseModel):
    suffix: str = ""


def shouter(ctx: AgentContext) -> Agent:
    settings = ctx.config(ShouterSettings)
    agent = Agent(ctx.name, emits=[SHOUTED])

    @agent.handles(PHRASES)
    async def shout(event: Incoming[Phrase]) -> list[Emit]:
        text = event.data.text.upper() + settings.suffix
        return [Emit(SHOUTED, Shouted(id=event.data.id, text=text), key=event.request_id)]

    return agent


counter = Agent("counter", emits=[COUNTED])


@counter.handles(SHOUTED)
async def count(event: Incoming[Shouted]) -> list[Emit]:
    words = len(event.data.text.split())
    return [Emit(COUNTED, Counted(id=event.data.id, text=event.data.text, words=words),
                 key=event.request_id)]
