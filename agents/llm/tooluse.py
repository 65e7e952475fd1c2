"""What a provider sees of an agent's tools: their specs, a way to call one, and a turn bound.

A provider never runs a business query itself. It offers the specs to the model, hands each
call the model asks for to `ToolUse.call`, and sends the outcome back. The tool layer
(agents/tools/registry.py) implements this: it enforces the agent's allowlist, validates the
input, runs the tool and traces it — so the anthropic and the offline provider go through the
same checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import orjson
from pydantic import BaseModel


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model.model_json_schema()`, a copy of its own for the caller. Pydantic builds a schema
    afresh on every call (about a millisecond of CPU for a tool's input model), and every model
    call sends its tools' and its output's: built once per model class instead."""
    return orjson.loads(_schema_json(model))  # type: ignore[no-any-return]


@lru_cache(maxsize=256)  # bounded: a model class made per call would not pile up
def _schema_json(model: type[BaseModel]) -> bytes:
    return orjson.dumps(model.model_json_schema())


@dataclass(frozen=True)
class ToolSpec:
    """A tool as a model is offered it (the Messages API's `tools` entry)."""

    name: str
    description: str
    input_schema: Mapping[str, Any]


@dataclass(frozen=True)
class ToolOutcome:
    """What goes back to the model as a `tool_result`: the output as JSON, or an error that says
    what was wrong (`is_error`). An error outcome means the tool was not run or failed."""

    name: str
    content: str
    is_error: bool = False


class ToolUse(Protocol):
    # Model turns that may ask for tools; the turn after them must give the final answer.
    max_turns: int

    def specs(self) -> Sequence[ToolSpec]: ...

    async def call(self, name: str, arguments: Any) -> ToolOutcome: ...
