"""Structured outputs the agents ask a model for.

Each is the input schema of the tool a model is forced to call (anthropic provider) or what an
offline rule returns; either way it is validated with pydantic before use.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from counterpoint.schemas.events import ProposedAction

# What a ticket needs is open: triage's settings name the intents (agents/triage.py), and the
# model is shown exactly those (ticket_assessment); "general" is always one of them.
GENERAL: Final = "general"
Focus = Literal["logs", "metrics", "deploys"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TicketAssessment(_Out):
    intents: list[str] = Field(min_length=1, description="every distinct need in the ticket")
    category: str
    priority: Literal["low", "normal", "high", "urgent"]
    rationale: str


@cache
def _assessment(intents: tuple[str, ...]) -> type[TicketAssessment]:
    choice = Literal[intents]  # type: ignore[valid-type]
    model: type[TicketAssessment] = create_model(
        "TicketAssessment", __base__=TicketAssessment,
        intents=(list[choice], Field(min_length=1,
                                     description="every distinct need in the ticket")))
    return model


def ticket_assessment(intents: Sequence[str]) -> type[TicketAssessment]:
    """TicketAssessment whose intents must be among `intents` (and "general"): the schema a
    model is shown and its answer is validated against."""
    return _assessment(tuple(dict.fromkeys([*intents, GENERAL])))


class AlertAssessment(_Out):
    severity: Literal["info", "warning", "critical"]
    category: str
    focuses: list[Focus] = Field(description="which infrastructure evidence to gather")
    rationale: str


class InvestigationSummary(_Out):
    summary: str
    recommended_actions: list[str] = Field(default_factory=list)


class Composition(_Out):
    text: str
    priority: Literal["low", "normal", "high", "urgent"]
    proposed_actions: list[ProposedAction] = Field(default_factory=list)
