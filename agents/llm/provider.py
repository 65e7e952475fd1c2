"""The interface between agent logic and whatever reasons for it.

An agent builds an `LLMRequest`: a task name, a system prompt, the business text as quoted
content (data, never instructions), structured context, and the pydantic model it wants back.
A provider returns that model validated, with token usage and who generated it. The offline
provider answers from deterministic rules; the anthropic provider (a later issue) forces a
tool call whose input schema is `output`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from counterpoint.agents.llm.tooluse import ToolUse
from counterpoint.schemas.events import Generation, Usage

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class LLMRequest(Generic[T]):
    task: str
    system: str
    content: str
    output: type[T]
    context: Mapping[str, Any] = field(default_factory=dict)
    max_tokens: int = 1024
    # Tools the model may call before answering (agents/llm/tooluse.py); None = answer at once.
    tools: ToolUse | None = None


@dataclass(frozen=True)
class LLMResponse(Generic[T]):
    output: T
    usage: Usage
    generation: Generation


class LLMProvider(Protocol):
    name: str

    async def generate(self, request: LLMRequest[T], *, model: str) -> LLMResponse[T]: ...


def quote(label: str, text: str) -> str:
    """Business text wrapped as data, so a model reads it as content to analyse."""
    fence = "=" * 8
    return f"<{label}>\n{fence}\n{text}\n{fence}\n</{label}>"
