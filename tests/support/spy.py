"""An offline provider that records which tasks reached the model."""

from __future__ import annotations

from typing import Any

from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.llm.provider import LLMRequest, LLMResponse


class Spy:
    """Records which tasks reached the model."""

    name = "offline"

    def __init__(self) -> None:
        self.inner = OfflineProvider()
        self.tasks: list[str] = []

    async def generate(self, request: LLMRequest[Any], *, model: str) -> LLMResponse[Any]:
        self.tasks.append(request.task)
        return await self.inner.generate(request, model=model)
