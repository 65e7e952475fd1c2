"""The tool layer: typed tools over the business store, and the per-request session that runs them.

A `Tool` is a name, a description, a pydantic input model, a pydantic output model and a
function over `BusinessStore`. Every output carries `facts` — checkable observations naming
the record each came from — which become the finding's facts.

A `ToolSession` is what one investigation hands its provider (it implements
agents/llm/tooluse.py's `ToolUse`): the tools on the agent's allowlist, nothing else. Every
call the model asks for goes through `ToolSession.call`, which

- refuses a tool that does not exist or is not on the allowlist, without running anything;
- validates the input against the tool's input model, refusing invalid input unrun;
- runs the tool in a thread (SQLite is blocking; the event loop keeps serving);
- traces it as a `tool NAME` span (tool name, agent, request id, outcome — never the input or
  output, which may hold personal data);
- answers with a `ToolOutcome`: the output as JSON, or an error a model can act on.

Only read-only tools exist for investigators: a session refuses to be built over a tool that
is not marked read-only, so an allowlist can never hand an investigator an action.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, ConfigDict, ValidationError

from counterpoint.agents.llm.tooluse import ToolOutcome, ToolSpec, json_schema
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.schemas.events import Fact

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("counterpoint.agents.tools")

DEFAULT_MAX_TURNS: Final = 4


class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Record(BaseModel):
    """A typed record inside a tool's output."""

    model_config = ConfigDict(frozen=True)


class ToolOutput(Record):

    facts: list[Fact]


In = TypeVar("In", bound=ToolInput)
Out = TypeVar("Out", bound=ToolOutput)


@dataclass(frozen=True)
class Tool(Generic[In, Out]):
    name: str
    description: str
    input: type[In]
    output: type[Out]
    run: Callable[[BusinessStore, In], Out]
    # Investigators may only hold read-only tools; actions belong to the approval flow.
    read_only: bool = True

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, json_schema(self.input))


class Registry:
    """Every tool by name. Names are unique: a model names the tool it wants."""

    def __init__(self, tools: Iterable[Tool[Any, Any]]) -> None:
        self._tools: dict[str, Tool[Any, Any]] = {}
        for tool in tools:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", tool.name):
                raise ValueError(f"tool name {tool.name!r} must be lower_snake_case, "
                                 "at most 64 characters")
            if tool.name in self._tools:
                raise ValueError(f"two tools are named {tool.name!r}")
            self._tools[tool.name] = tool

    def get(self, name: str) -> Tool[Any, Any] | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __iter__(self) -> Iterator[Tool[Any, Any]]:
        return iter(self._tools.values())

    def read_only(self, names: Iterable[str], *, agent: str) -> dict[str, Tool[Any, Any]]:
        """The named tools; refuses an unknown one or one with side effects."""
        tools: dict[str, Tool[Any, Any]] = {}
        for name in names:
            tool = self.get(name)
            if tool is None:
                raise ValueError(f"the {agent} allowlist names an unknown tool {name!r}")
            if not tool.read_only:
                raise ValueError(f"the {agent} allowlist names {name!r}, which has side "
                                 "effects; investigators may only read")
            tools[name] = tool
        return tools

    def session(self, allowed: Iterable[str], store: BusinessStore, *, agent: str,
                request_id: str, max_turns: int = DEFAULT_MAX_TURNS) -> ToolSession:
        return ToolSession(self, allowed, store, agent=agent, request_id=request_id,
                           max_turns=max_turns)


@dataclass(frozen=True)
class ToolCall:
    """One call a model asked for, as it went: `output` when it ran, `error` when it did not
    (or failed)."""

    name: str
    outcome: str  # ok, unknown-tool, not-allowed, invalid-input, failed
    output: ToolOutput | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class ToolSession:
    """One investigation's tools: the agent's allowlist over the registry (see the module doc)."""

    registry: Registry
    allowed_names: Iterable[str]
    store: BusinessStore
    agent: str
    request_id: str
    max_turns: int = DEFAULT_MAX_TURNS
    calls: list[ToolCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        allowed = self.registry.read_only(self.allowed_names, agent=self.agent)
        self._allowed = allowed
        self.allowed_names = tuple(allowed)
        if self.max_turns < 0:
            raise ValueError(f"max_turns must be 0 or more, got {self.max_turns}")

    def specs(self) -> Sequence[ToolSpec]:
        return [tool.spec() for tool in self._allowed.values()]

    def facts(self) -> list[Fact]:
        """Every fact the successful calls returned, in call order, each once."""
        seen: dict[tuple[str, str], Fact] = {}
        for call in self.calls:
            for fact in call.output.facts if call.output is not None else []:
                seen.setdefault((fact.text, fact.source), fact)
        return list(seen.values())

    async def call(self, name: str, arguments: Any) -> ToolOutcome:
        shown = _span_safe(name)
        with _tracer.start_as_current_span(f"tool {shown}", attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": shown,
                "counterpoint.tool.name": shown,
                "counterpoint.agent": self.agent,
                "counterpoint.request_id": self.request_id}) as span:
            call = await self._call(name, shown, arguments)
            self.calls.append(call)
            span.set_attribute("counterpoint.tool.outcome", call.outcome)
            if call.ok:
                assert call.output is not None
                span.set_attribute("counterpoint.tool.facts", len(call.output.facts))
                span.set_status(Status(StatusCode.OK))
                return ToolOutcome(shown, call.output.model_dump_json())
            span.set_status(Status(StatusCode.ERROR, call.outcome))
            log.warning("%s refused or failed tool call %s for request %s: %s", self.agent,
                        shown, self.request_id, call.outcome)
            return ToolOutcome(shown, call.error or call.outcome, is_error=True)

    async def _call(self, name: str, shown: str, arguments: Any) -> ToolCall:
        tool = self._allowed.get(name)
        can = ", ".join(self._allowed) or "none"
        if tool is None:
            if self.registry.get(name) is None:
                return ToolCall(shown, "unknown-tool", error=(
                    f"There is no tool named {shown!r}; nothing was run. Tools you can call: "
                    f"{can}."))
            return ToolCall(shown, "not-allowed", error=(
                f"The {self.agent} agent may not use {shown}; it was not run. Tools you can "
                f"call: {can}."))
        if not isinstance(arguments, Mapping):
            return ToolCall(name, "invalid-input", error=(
                f"Invalid input for {name}: the input must be a JSON object; it was not run."))
        try:
            parsed = tool.input.model_validate(dict(arguments))
        except ValidationError as exc:
            return ToolCall(name, "invalid-input", error=(
                f"Invalid input for {name}: {describe(exc)}. It was not run; call it again "
                "with input that fits its schema."))
        try:
            output = await asyncio.to_thread(tool.run, self.store, parsed)
        except Exception as exc:  # a tool failure is an answer for the model, not a crash
            log.exception("tool %s failed for %s (request %s)", name, self.agent,
                          self.request_id)
            return ToolCall(name, "failed", error=(
                f"{name} failed ({type(exc).__name__}); its records could not be read."))
        return ToolCall(name, "ok", output=output)


def describe(exc: ValidationError) -> str:
    """Where the input is wrong and how, without echoing the input."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}"
                     for e in exc.errors(include_url=False, include_input=False))


def _span_safe(name: Any) -> str:
    # A requested name is model output (possibly steered by a ticket): keep it short and plain.
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:64]
    return text or "(unnamed)"
