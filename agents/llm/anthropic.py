"""The anthropic provider: Claude through the official `anthropic` SDK.

Structured output by a forced tool call: the request's output model becomes the input schema of
one tool (`record_<model name>`), `tool_choice` makes Claude call it, and its input is validated
with pydantic. An input that fails validation is sent back once as an error `tool_result`
naming what was wrong; a second failure is `InvalidOutput` (final: asking again the same way is
not a fix).

Tools (the agentic loop): when the request carries the agent's tools (`LLMRequest.tools`, see
agents/llm/tooluse.py), they are offered with the output tool last. For up to `max_turns` turns
`tool_choice` is `auto`: each `tool_use` Claude asks for goes to the tool layer — which refuses
a tool off the agent's allowlist or invalid input without running it — and comes back as a
`tool_result` (`is_error` with the reason when refused or failed). The turn after that, or
after a reply with text only, forces the output tool. Usage is summed over every turn.

Failures map onto the provider errors (agents/llm/errors.py), so the bus decides what to retry:

    429                          RateLimited (retry_after from the Retry-After header)
    529 / 503 / overloaded_error the fallback model is asked once (routing.py); if it is
                                 overloaded too, or there is none: Overloaded
    408 / 504, timeout, no connection   ProviderTimeout
    other 5xx                    ServerError (retriable)
    other 4xx                    ProviderError (final: a bad key or request stays bad)

The SDK's own retries are off (max_retries=0): the bus's retries are bounded in attempts and
time and honour retry_after, and a second, hidden retry loop underneath would multiply them.

The SDK takes seconds to import, so it is imported on first use (in a thread, so a running
agent's event loop keeps serving its consumer meanwhile), and one `AsyncAnthropic` client is
built per provider — one per process — and reused.

Tracing: one `chat {model}` span per `generate` with the GenAI semantic-convention attributes
(model asked, model that answered, tokens summed over turns), never prompt text. The SDK's own
span per HTTP call is its child, kept metadata-only for the same reason.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, TracerProvider
from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from counterpoint.agents.llm.errors import (
    InvalidOutput,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from counterpoint.agents.llm.provider import LLMRequest, LLMResponse, quote
from counterpoint.agents.llm.routing import DEFAULT_FALLBACKS, Fallback, fallback_for
from counterpoint.agents.llm.tooluse import json_schema
from counterpoint.schemas.events import Generation, Usage

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic
    from anthropic.types import (
        AssistantMessageParam,
        Message,
        MessageParam,
        TextBlockParam,
        ToolChoiceParam,
        ToolParam,
        UserMessageParam,
    )

T = TypeVar("T", bound=BaseModel)

PROVIDER_NAME: Final = "anthropic"
DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
TRACER_NAME: Final = "counterpoint.agents.llm"

log = logging.getLogger(__name__)


class ServerError(ProviderError):
    """The API failed on its side (HTTP 500, 502, ...): worth trying again later."""

    retriable = True
    reason = "llm-server-error"


class AnthropicProvider:
    """Answers `LLMRequest`s with Claude. One per process; `aclose()` releases its connections.

    `api_key` is passed to the SDK explicitly, so the SDK reads no other credentials.
    `base_url` defaults to `ANTHROPIC_BASE_URL` (the SDK's own convention), else the public API.
    `fallback`: see routing.py (default: sonnet and haiku stand in for each other).
    `send_context`: also send the request's structured context (customer tier and tenure,
    missing investigations, alert labels, ...) as a quoted JSON block after its content; the
    system prompts refer to it and the content alone does not carry it.
    """

    name = PROVIDER_NAME

    def __init__(self, api_key: str, *, base_url: str | None = None,
                 fallback: Fallback = DEFAULT_FALLBACKS, timeout_s: float = 60.0,
                 max_sdk_retries: int = 0, send_context: bool = True,
                 tracer_provider: TracerProvider | None = None) -> None:
        if not api_key:
            raise ValueError("the anthropic provider needs an API key (ANTHROPIC_API_KEY)")
        self._api_key = api_key
        self.base_url = (base_url or os.environ.get("ANTHROPIC_BASE_URL", "").strip()
                         or DEFAULT_BASE_URL)
        self.fallback = fallback
        self.timeout_s = timeout_s
        self.max_sdk_retries = max_sdk_retries
        self.send_context = send_context
        self._tracer_provider = tracer_provider
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        self._sdk: ModuleType | None = None
        self._client: AsyncAnthropic | None = None
        self._client_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (f"AnthropicProvider(base_url={self.base_url!r}, fallback={self.fallback!r}, "
                f"timeout_s={self.timeout_s})")

    async def client(self) -> AsyncAnthropic:
        """The process's one SDK client, built (and the SDK imported) on first use."""
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    started = time.monotonic()
                    sdk = await asyncio.to_thread(importlib.import_module, "anthropic")
                    traces: dict[str, Any] = {
                        # Honour the SDK's switch, but never let its spans carry prompt text.
                        "enabled": os.environ.get("ANTHROPIC_OPEN_TELEMETRY", "").strip()
                        .lower() != "false",
                        "content_mode": "metadata_only",
                    }
                    otel: dict[str, Any] = {"traces": traces}
                    if self._tracer_provider is not None:
                        otel["tracer_provider"] = self._tracer_provider
                    self._client = sdk.AsyncAnthropic(
                        api_key=self._api_key, base_url=self.base_url, timeout=self.timeout_s,
                        # Off: the bus's bounded retries are the only ones (see the docstring).
                        max_retries=self.max_sdk_retries, open_telemetry=otel)
                    self._sdk = sdk
                    log.info("anthropic SDK %s ready in %.1f s (base URL %s)",
                             getattr(sdk, "__version__", "?"), time.monotonic() - started,
                             self.base_url)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def generate(self, request: LLMRequest[T], *, model: str) -> LLMResponse[T]:
        client = await self.client()
        tool = tool_for(request.output)
        session = request.tools
        offered = offered_tools(request, tool)
        # Turns in which the model may ask for tools; the turn after them must answer.
        tool_turns = session.max_turns if session is not None and len(offered) > 1 else 0
        ask: UserMessageParam = {"role": "user", "content": self._user_content(request)}
        messages: list[MessageParam] = [ask]
        usage = Usage(estimated=False)
        asking = model  # the model asked now: `model`, or its fallback after an overload
        turns_used = 0
        retried = False
        with self._tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT,
                                                attributes={
                                                    "gen_ai.operation.name": "chat",
                                                    "gen_ai.provider.name": PROVIDER_NAME,
                                                    "gen_ai.request.model": model,
                                                    "gen_ai.request.max_tokens":
                                                        request.max_tokens,
                                                    "counterpoint.llm.task": request.task,
                                                }) as span:
            try:
                while True:
                    forced = turns_used >= tool_turns
                    choice: ToolChoiceParam = (
                        {"type": "tool", "name": tool["name"], "disable_parallel_tool_use": True}
                        if forced else {"type": "auto"})
                    message, asking = await self._ask(client, request, offered, choice,
                                                      messages, asking, first=model, span=span)
                    usage += usage_of(message)
                    span.set_attribute("gen_ai.response.model", message.model)
                    uses = [b for b in message.content if b.type == "tool_use"]
                    block = next((b for b in uses if b.name == tool["name"]), None)
                    if block is None and forced:
                        raise InvalidOutput(
                            f"{message.model} did not call {tool['name']} (stop reason "
                            f"{message.stop_reason}): no structured answer to use")
                    if block is not None:
                        try:
                            output = request.output.model_validate(block.input)
                        except ValidationError as exc:
                            problems = describe(exc)
                            if retried:
                                raise InvalidOutput(
                                    f"{message.model} answered {request.task} twice with input "
                                    f"that does not fit {request.output.__name__}: {problems}"
                                ) from exc
                            retried = True
                            log.warning("%s: %s's %s input did not validate; asking once more "
                                        "(%s)", request.task, message.model, tool["name"],
                                        problems)
                            span.add_event("invalid output", {"counterpoint.llm.problems":
                                                              problems[:500]})
                            refusal = (f"Invalid input for {tool['name']}: {problems}. Call "
                                       f"{tool['name']} again with input that fits its schema.")
                            messages += [_assistant(message), _results(uses, {
                                block.id: refusal}, unrun=f"Not run: answer with {tool['name']} "
                                                          "now.")]
                            turns_used = tool_turns  # the next turn must answer
                            continue
                        span.set_attribute("counterpoint.llm.turns", usage.calls)
                        return LLMResponse(output, usage, Generation(
                            provider=PROVIDER_NAME, model=message.model, offline=False))
                    assert session is not None  # tools are only offered with a session
                    if not uses:
                        # Text without a tool call while tools were allowed: ask for the answer
                        # (an empty turn is not sent back; the forced choice is enough).
                        said = _assistant(message)
                        if said["content"]:
                            messages += [said, {"role": "user", "content": [{
                                "type": "text", "text": f"Now call {tool['name']} with your "
                                                        "answer."}]}]
                        turns_used = tool_turns
                        continue
                    outcomes = [await session.call(b.name, b.input) for b in uses]
                    span.add_event("tool calls", {"counterpoint.llm.tools": [
                        o.name for o in outcomes]})
                    messages += [_assistant(message), {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": b.id, "content": o.content,
                         "is_error": o.is_error} for b, o in zip(uses, outcomes, strict=True)]}]
                    turns_used += 1
            except ProviderError as exc:
                span.set_attribute("error.type", exc.reason)
                raise
            finally:
                span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
                span.set_attribute("counterpoint.llm.calls", usage.calls)

    async def _ask(self, client: AsyncAnthropic, request: LLMRequest[Any],
                   tools: list[ToolParam], choice: ToolChoiceParam,
                   messages: list[MessageParam], asking: str, *, first: str,
                   span: Span) -> tuple[Message, str]:
        """One turn. If `asking` is overloaded and is still the model first asked, its fallback
        is asked instead, once per request; returns the answer and the model now asked."""
        try:
            return await self._create(client, request, tools, choice, messages, asking), asking
        except Overloaded as exc:
            stand_in = fallback_for(asking, self.fallback) if asking == first else None
            if stand_in is None:
                raise
            log.warning("%s is overloaded; asking %s instead for %s (%s)", asking, stand_in,
                        request.task, exc)
            span.add_event("fallback", {"counterpoint.llm.overloaded_model": asking,
                                        "counterpoint.llm.fallback_model": stand_in})
            span.set_attribute("counterpoint.llm.fallback_model", stand_in)
            try:
                return (await self._create(client, request, tools, choice, messages, stand_in),
                        stand_in)
            except Overloaded as again:
                raise Overloaded(f"{asking} and its fallback {stand_in} are both overloaded "
                                 f"({again})") from again

    async def _create(self, client: AsyncAnthropic, request: LLMRequest[Any],
                      tools: list[ToolParam], choice: ToolChoiceParam,
                      messages: list[MessageParam], model: str) -> Message:
        """One Messages API call, its failures mapped onto the provider errors."""
        sdk = self._sdk
        assert sdk is not None
        try:
            return await client.messages.create(
                model=model, max_tokens=request.max_tokens, system=request.system,
                messages=messages, tools=tools, tool_choice=choice)
        except sdk.RateLimitError as exc:
            raise RateLimited(f"{model}: rate limited (429): {_api_message(exc)}",
                              retry_after=retry_after(exc.response.headers)) from exc
        except sdk.APIStatusError as exc:
            status, kind = exc.status_code, getattr(exc, "type", None)
            what = f"{model}: HTTP {status} {kind or ''}: {_api_message(exc)}"
            if status in (503, 529) or kind == "overloaded_error":
                raise Overloaded(what) from exc
            if status in (408, 504):
                raise ProviderTimeout(what) from exc
            if status >= 500:
                raise ServerError(what) from exc
            raise ProviderError(what) from exc
        except sdk.APITimeoutError as exc:
            raise ProviderTimeout(f"{model}: no answer within {self.timeout_s} s") from exc
        except sdk.APIConnectionError as exc:
            raise ProviderTimeout(f"{model}: cannot reach {self.base_url}: {exc}") from exc

    def _user_content(self, request: LLMRequest[Any]) -> list[TextBlockParam]:
        blocks: list[TextBlockParam] = [{"type": "text", "text": request.content}]
        if self.send_context and request.context:
            blocks.append({"type": "text", "text": quote("context", context_json(request.context))})
        return blocks


def tool_for(output: type[BaseModel]) -> ToolParam:
    """The one tool a model is made to call: its input schema is the output model's."""
    name = "record_" + snake(output.__name__)
    doc = (output.__doc__ or "").strip()
    description = (f"Record your {snake(output.__name__).replace('_', ' ')}. Call this tool "
                   "exactly once; its input is your whole answer.")
    if doc and doc != (BaseModel.__doc__ or "").strip():
        description += " " + doc
    return {"name": name, "description": description,
            "input_schema": json_schema(output)}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def usage_of(message: Message) -> Usage:
    """One answer's tokens; cache reads and writes count as input."""
    u = message.usage
    read, written = u.cache_read_input_tokens or 0, u.cache_creation_input_tokens or 0
    return Usage(input_tokens=u.input_tokens + read + written,
                 output_tokens=u.output_tokens, calls=1, estimated=False,
                 cache_read_tokens=read, cache_write_tokens=written)


def describe(exc: ValidationError) -> str:
    """A validation error as a model can act on it: where, and what is wrong (no input echo)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(input)'}: {e['msg']}"
                     for e in exc.errors(include_url=False, include_input=False))


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    try:
        if (ms := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def context_json(context: Mapping[str, Any]) -> str:
    return json.dumps(to_jsonable_python(dict(context), fallback=str, exclude_none=True),
                      ensure_ascii=False, separators=(",", ":"))


def offered_tools(request: LLMRequest[Any], output_tool: ToolParam) -> list[ToolParam]:
    """The request's business tools, then the output tool (always last, always offered)."""
    if request.tools is None:
        return [output_tool]
    tools: list[ToolParam] = []
    for spec in request.tools.specs():
        if spec.name == output_tool["name"]:
            raise ValueError(f"a tool may not be named like the output tool {spec.name!r}")
        tools.append({"name": spec.name, "description": spec.description,
                      "input_schema": dict(spec.input_schema)})
    return [*tools, output_tool]


def _assistant(message: Message) -> AssistantMessageParam:
    """The model's turn as it must be sent back: its text and tool calls, in order."""
    content: list[Any] = []
    for block in message.content:
        if block.type == "text" and block.text:
            content.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            content.append({"type": "tool_use", "id": block.id, "name": block.name,
                            "input": block.input})
    return {"role": "assistant", "content": content}


def _results(uses: list[Any], errors: Mapping[str, str], *, unrun: str) -> UserMessageParam:
    """An error `tool_result` for every call of a turn: each call needs an answer."""
    return {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": b.id, "is_error": True,
         "content": errors.get(b.id, unrun)} for b in uses]}


def _api_message(exc: Exception) -> str:
    return str(getattr(exc, "api_message", None) or getattr(exc, "message", None) or exc)
