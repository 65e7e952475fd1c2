"""Everything you need to write agents of your own: `from counterpoint.kit import ...`.

    from pydantic import BaseModel
    from counterpoint.kit import Agent, AgentContext, Emit, Incoming, LLMRequest, intake, topic

    class Lead(BaseModel):
        id: str
        company: str

    class Research(BaseModel):
        lead_id: str
        notes: str

    LEADS = intake("sales.leads", Lead)          # raw JSON from any Kafka client
    RESEARCH = topic("sales.research", Research)

    def researcher(ctx: AgentContext) -> Agent:
        agent = Agent(ctx.name, emits=[RESEARCH])

        @agent.handles(LEADS)
        async def on_lead(event: Incoming[Lead]) -> list[Emit]:
            ...
            return [Emit(RESEARCH, Research(...), key=event.request_id)]

        return agent

Run it with `counterpoint agent mymodule:researcher`, or name it in counterpoint.toml
(`[agents.researcher] use = "mymodule:researcher"`) and `counterpoint up`. The names here
are the stable surface; modules under counterpoint.* that are not re-exported here may change.
"""

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.context import AgentContext, SettingsError
from counterpoint.agents.llm.provider import LLMProvider, LLMRequest, LLMResponse, quote
from counterpoint.agents.patterns.approval import ApprovalGate
from counterpoint.agents.patterns.join import FanIn, Gathering
from counterpoint.agents.patterns.loop import LoopBack
from counterpoint.agents.signing import Refused
from counterpoint.bus.agent import (
    Agent,
    AgentDeclarationError,
    Cause,
    Emit,
    Hold,
    Incoming,
    Publisher,
)
from counterpoint.bus.errors import CounterpointError, TransientError
from counterpoint.schemas.approvals import ApprovalDecision
from counterpoint.schemas.events import Generation, ProposedAction, Usage
from counterpoint.topics.topic import Topic, intake, topic

__all__ = [
    "Agent",
    "AgentContext",
    "AgentDeclarationError",
    "ApprovalDecision",
    "ApprovalGate",
    "ApprovalPolicy",
    "Cause",
    "CounterpointError",
    "Emit",
    "FanIn",
    "Gathering",
    "Generation",
    "Hold",
    "Incoming",
    "LLMProvider",
    "LLMRequest",
    "LLMResponse",
    "LoopBack",
    "ProposedAction",
    "Publisher",
    "Refused",
    "SettingsError",
    "Topic",
    "TransientError",
    "Usage",
    "intake",
    "quote",
    "topic",
]
