"""Structured outputs the agents ask a model for.

Each is the input schema of the tool a model is forced to call (anthropic provider) or what an
offline rule returns; either way it is validated with pydantic before use.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from counterpoint.schemas.events import ProposedAction

Intent = Literal["billing", "account", "technical", "general"]
Focus = Literal["logs", "metrics", "deploys"]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TicketAssessment(_Out):
    intents: list[Intent] = Field(min_length=1, description="every distinct need in the ticket")
    category: str
    priority: Literal["low", "normal", "high", "urgent"]
    rationale: str


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
