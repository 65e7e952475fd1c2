"""Tool and output schemas are built once per model class, and every caller gets its own copy."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from counterpoint.agents.llm.anthropic import tool_for
from counterpoint.agents.llm.tooluse import json_schema
from counterpoint.agents.tools.define import tool


class Answer(BaseModel):
    summary: str


def _counting(monkeypatch: pytest.MonkeyPatch, model: type[BaseModel]) -> list[int]:
    built: list[int] = []
    original = model.model_json_schema

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        built.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "model_json_schema", counted)
    return built


def test_a_tool_builds_its_input_schema_once(monkeypatch: pytest.MonkeyPatch) -> None:
    @tool  # a tool of this test's own: no schema cached for its input model yet
    def look_up(customer_id: str) -> str:
        """Finds a customer."""
        return customer_id

    built = _counting(monkeypatch, look_up.input)
    first, second = look_up.input_schema(), look_up.input_schema()
    assert first == second == look_up.input.model_json_schema()
    assert len(built) == 2  # once for both calls, once for the comparison above


def test_the_output_tool_builds_its_schema_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class Verdict(BaseModel):
        summary: str

    built = _counting(monkeypatch, Verdict)
    for _ in range(3):
        assert tool_for(Verdict)["input_schema"]["required"] == ["summary"]
    assert len(built) == 1


def test_each_caller_gets_a_copy_of_its_own() -> None:
    schema = json_schema(Answer)
    schema["properties"]["summary"]["type"] = "integer"
    schema["required"].clear()
    assert json_schema(Answer) == Answer.model_json_schema()
