"""The tool layer: tools from every source behind one interface, per-agent allowlists, and the
per-request session that runs them.

A `Tool` is a name, a description, an input schema, whether it only reads, and a way to run
it. Tools come from sources: a module of `@tool` functions (`PythonTool`, agents/tools/define.py)
or an MCP server (agents/tools/mcp.py). An allowlist entry names the source and the tool,
`SOURCE.TOOL`; a model sees the bare tool name.

A `Toolbox` holds the tools of the sources a process opened and each agent's allowlist. It
refuses, when it is built, an allowlist entry naming a source or tool that does not exist.
`Toolbox.session` is what one investigation hands its provider (it implements
agents/llm/tooluse.py's `ToolUse`): the agent's read-only tools, nothing else. Every call a
model asks for goes through `ToolSession.call`, which

- refuses a tool that does not exist or is not on the allowlist, without running anything;
- validates the input against the tool's schema, refusing invalid input unrun;
- traces it as a `tool NAME` span (tool, server, agent, request id, outcome — never the input
  or output, which may hold personal data);
- answers with a `ToolOutcome`: the output as JSON, or an error a model can act on. A server
  that cannot be reached or a call that times out is not an answer: it raises a retriable
  error (agents/tools/errors.py) and the bus retries the event.

A tool with side effects is never in a session: a session refuses to be built over one, so no
allowlist can hand a model an action. Actions run through `Toolbox.action`, called by the
executor after an approval.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode
from pydantic import ValidationError

from counterpoint.agents.llm.tooluse import ToolOutcome, ToolSpec
from counterpoint.agents.tools.define import FunctionTool
from counterpoint.agents.tools.errors import InvalidInput, ToolConfigError
from counterpoint.bus.errors import is_retriable
from counterpoint.schemas.events import Fact

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("counterpoint.agents.tools")

DEFAULT_MAX_TURNS: Final = 4
# A fact made from a tool's plain output (one without `facts`) keeps this much of it.
FACT_CHARS: Final = 500


@dataclass(frozen=True)
class ToolReply:
    """What a tool answered: its output as text (JSON when structured), the parsed value when
    it is JSON, and whether the tool reported an error."""

    text: str
    data: Any = None
    is_error: bool = False


class Tool(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def read_only(self) -> bool: ...

    def input_schema(self) -> Mapping[str, Any]: ...

    def check(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments as the tool takes them; `InvalidInput` when they do not fit."""
        ...

    async def run(self, arguments: dict[str, Any]) -> ToolReply: ...


def qualified(tool: Tool) -> str:
    return f"{tool.source}.{tool.name}"


@dataclass(frozen=True)
class PythonTool:
    """A `@tool` function of a named source, with the configured values it is injected."""

    function: FunctionTool
    source: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if missing := self.function.missing(self.values):
            raise ToolConfigError(
                f"tool source {self.source!r}: {self.function.name} needs "
                f"{', '.join(missing)} injected; set it under the source's `inject`")

    @property
    def name(self) -> str:
        return self.function.name

    @property
    def description(self) -> str:
        return self.function.description

    @property
    def read_only(self) -> bool:
        return self.function.read_only

    def input_schema(self) -> Mapping[str, Any]:
        return self.function.input_schema()

    def check(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self.function.input.model_validate(dict(arguments)).model_dump()
        except ValidationError as exc:
            raise InvalidInput(describe(exc)) from None

    async def run(self, arguments: dict[str, Any]) -> ToolReply:
        parsed = self.function.input.model_validate(arguments)
        return reply_of(await self.function.invoke(parsed, self.values))


def python_tools(source: str, functions: Iterable[FunctionTool],
                 values: Mapping[str, Any] | None = None) -> list[PythonTool]:
    return [PythonTool(f, source, values or {}) for f in functions]


def reply_of(value: Any) -> ToolReply:
    """A Python tool's return value as a reply: JSON for models and data, text as it is."""
    if isinstance(value, str):
        return ToolReply(value)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    text = json.dumps(value, default=str, ensure_ascii=False)
    return ToolReply(text, json.loads(text))


class Toolbox:
    """The tools a process can run, by `SOURCE.TOOL`, and which agent may use which."""

    def __init__(self, tools: Iterable[Tool],
                 allowlists: Mapping[str, Sequence[str]] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for tool in tools:
            if qualified(tool) in self._tools:
                raise ToolConfigError(f"two tools are named {qualified(tool)!r}")
            self._tools[qualified(tool)] = tool
        self._allowlists = {agent: tuple(names) for agent, names in (allowlists or {}).items()}
        for agent, names in self._allowlists.items():
            seen: dict[str, str] = {}
            for entry in names:
                tool = self._resolve(entry, agent)
                if tool.name in seen:
                    raise ToolConfigError(
                        f"the {agent} allowlist has two tools named {tool.name!r} "
                        f"({seen[tool.name]} and {entry}); a model could not tell them apart")
                seen[tool.name] = entry

    def _resolve(self, entry: str, agent: str) -> Tool:
        source, dot, name = entry.partition(".")
        if not dot or not source or not name:
            raise ToolConfigError(f"the {agent} allowlist entry {entry!r} must be SOURCE.TOOL")
        sources = sorted({t.source for t in self._tools.values()})
        if source not in sources:
            raise ToolConfigError(f"the {agent} allowlist names {entry!r}, but there is no "
                                  f"tool source {source!r} (sources: "
                                  f"{', '.join(sources) or 'none'})")
        tool = self._tools.get(entry)
        if tool is None:
            has = sorted(t.name for t in self._tools.values() if t.source == source)
            raise ToolConfigError(f"tool source {source!r} has no tool {name!r}, which the "
                                  f"{agent} allowlist names (it has: {', '.join(has)})")
        return tool

    def allowlist(self, agent: str) -> tuple[str, ...]:
        """`SOURCE.TOOL` entries `agent` may use; none for an agent without an allowlist."""
        return self._allowlists.get(agent, ())

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, entry: str) -> Tool | None:
        return self._tools.get(entry)

    def read_only(self, agent: str) -> dict[str, Tool]:
        """`agent`'s tools by bare name; refuses one with side effects (at start-up)."""
        tools: dict[str, Tool] = {}
        for entry in self.allowlist(agent):
            tool = self._resolve(entry, agent)
            if not tool.read_only:
                raise ToolConfigError(
                    f"the {agent} allowlist names {entry}, which has side effects (or is not "
                    "declared read-only); a model may only be given tools that read. Actions "
                    "run after an approval, through the executor")
            tools[tool.name] = tool
        return tools

    async def action(self, entry: str, arguments: Mapping[str, Any], *, agent: str,
                     request_id: str) -> ToolReply:
        """Run `entry`, a tool on `agent`'s allowlist, for an approved action, traced like any
        call. `ToolConfigError` when it is not on the allowlist, `InvalidInput` when the
        arguments do not fit its schema (neither runs anything); a retriable error when its
        server cannot be reached or is too slow."""
        if entry not in self.allowlist(agent):
            raise ToolConfigError(f"{entry} is not on the {agent} allowlist")
        tool = self._resolve(entry, agent)
        with _tool_span(tool.name, tool.source, agent, request_id) as span:
            try:
                reply = await tool.run(tool.check(arguments))
            except Exception as exc:
                _failed(span, exc)
                raise
            outcome = "failed" if reply.is_error else "ok"
            span.set_attribute("counterpoint.tool.outcome", outcome)
            span.set_status(Status(StatusCode.ERROR, outcome) if reply.is_error
                            else Status(StatusCode.OK))
            return reply

    def session(self, agent: str, *, request_id: str,
                max_turns: int = DEFAULT_MAX_TURNS) -> ToolSession:
        return ToolSession(self, agent, request_id, max_turns)


@dataclass(frozen=True)
class ToolCall:
    """One call a model asked for, as it went: `reply` when it ran, `error` when it did not
    (or failed)."""

    name: str
    source: str
    outcome: str  # ok, unknown-tool, not-allowed, invalid-input, failed
    reply: ToolReply | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class ToolSession:
    """One request's tools: the agent's allowlist over the toolbox (see the module doc)."""

    toolbox: Toolbox
    agent: str
    request_id: str
    max_turns: int = DEFAULT_MAX_TURNS
    calls: list[ToolCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._allowed = self.toolbox.read_only(self.agent)
        if self.max_turns < 0:
            raise ValueError(f"max_turns must be 0 or more, got {self.max_turns}")

    def specs(self) -> Sequence[ToolSpec]:
        return [ToolSpec(t.name, t.description, t.input_schema()) for t in self._allowed.values()]

    def facts(self) -> list[Fact]:
        """Every fact the successful calls returned, in call order, each once."""
        seen: dict[tuple[str, str], Fact] = {}
        for call in self.calls:
            if call.reply is not None:
                for fact in facts_of(call.reply, f"{call.source}.{call.name}"):
                    seen.setdefault((fact.text, fact.source), fact)
        return list(seen.values())

    def replies(self) -> list[ToolReply]:
        return [c.reply for c in self.calls if c.ok and c.reply is not None]

    async def call(self, name: str, arguments: Any) -> ToolOutcome:
        shown = _span_safe(name)
        tool = self._allowed.get(name)
        server = tool.source if tool is not None else ""
        with _tool_span(shown, server, self.agent, self.request_id) as span:
            try:
                call = await self._call(tool, shown, arguments)
            except Exception as exc:
                # Unreachable or too slow: not an answer for the model, a retry for the bus.
                # The reason is ours (ToolUnavailable / ToolTimeout say what broke, never data).
                log.warning("%s: tool %s.%s %s for request %s: %s", self.agent, server, shown,
                            _failed(span, exc), self.request_id, exc)
                raise
            self.calls.append(call)
            span.set_attribute("counterpoint.tool.outcome", call.outcome)
            if call.ok:
                assert call.reply is not None
                span.set_status(Status(StatusCode.OK))
                return ToolOutcome(shown, call.reply.text)
            span.set_status(Status(StatusCode.ERROR, call.outcome))
            log.warning("%s refused or failed tool call %s for request %s: %s", self.agent,
                        shown, self.request_id, call.outcome)
            return ToolOutcome(shown, call.error or call.outcome, is_error=True)

    async def _call(self, tool: Tool | None, shown: str, arguments: Any) -> ToolCall:
        can = ", ".join(self._allowed) or "none"
        if tool is None:
            known = {entry.partition(".")[2] for entry in self.toolbox.names()}
            if shown not in known:
                return ToolCall(shown, "", "unknown-tool", error=(
                    f"There is no tool named {shown!r}; nothing was run. Tools you can call: "
                    f"{can}."))
            return ToolCall(shown, "", "not-allowed", error=(
                f"The {self.agent} agent may not use {shown}; it was not run. Tools you can "
                f"call: {can}."))
        if not isinstance(arguments, Mapping):
            return ToolCall(tool.name, tool.source, "invalid-input", error=(
                f"Invalid input for {tool.name}: the input must be a JSON object; it was not "
                "run."))
        try:
            checked = tool.check(arguments)
        except InvalidInput as exc:
            return ToolCall(tool.name, tool.source, "invalid-input", error=(
                f"Invalid input for {tool.name}: {exc}. It was not run; call it again with "
                "input that fits its schema."))
        try:
            reply = await tool.run(checked)
        except Exception as exc:
            if is_retriable(exc):
                raise
            # A tool's own failure is an answer for the model, not a crash; its text may
            # hold data, so only the kind is passed on.
            log.exception("tool %s failed for %s (request %s)", qualified(tool), self.agent,
                          self.request_id)
            return ToolCall(tool.name, tool.source, "failed", error=(
                f"{tool.name} failed ({type(exc).__name__}); its records could not be read."))
        if reply.is_error:
            return ToolCall(tool.name, tool.source, "failed", reply=None,
                            error=f"{tool.name} reported an error: {reply.text}")
        return ToolCall(tool.name, tool.source, "ok", reply=reply)


@contextmanager
def _tool_span(name: str, server: str, agent: str, request_id: str) -> Iterator[Span]:
    """The `tool NAME` span of one call: names the server, never the input or the output."""
    with _tracer.start_as_current_span(f"tool {name}", attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "counterpoint.tool.name": name,
            "counterpoint.tool.server": server,
            "counterpoint.agent": agent,
            "counterpoint.request_id": request_id}) as span:
        yield span


def _failed(span: Span, exc: BaseException) -> str:
    outcome = getattr(exc, "reason", "failed") if is_retriable(exc) else "failed"
    span.set_attribute("counterpoint.tool.outcome", outcome)
    span.set_status(Status(StatusCode.ERROR, outcome))
    return outcome


def facts_of(reply: ToolReply, source: str) -> list[Fact]:
    """A reply's `facts` ({text, source} objects) when it has them; otherwise one fact holding
    the start of its output, sourced to the tool."""
    raw = reply.data.get("facts") if isinstance(reply.data, dict) else None
    if isinstance(raw, list):
        found = []
        for item in raw:
            try:
                found.append(Fact.model_validate(item))
            except ValidationError:
                continue
        return found
    text = reply.text.strip()
    return [Fact(text=text[:FACT_CHARS], source=source)] if text else []


def describe(exc: ValidationError) -> str:
    """Where the input is wrong and how, without echoing the input."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}"
                     for e in exc.errors(include_url=False, include_input=False))


def _span_safe(name: Any) -> str:
    # A requested name is model output (possibly steered by a ticket): keep it short and plain.
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:64]
    return text or "(unnamed)"
