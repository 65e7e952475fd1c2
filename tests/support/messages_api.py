"""A local stand-in for the Anthropic Messages API, so tests run the real `anthropic` SDK.

`MessagesAPI` is an HTTP server on 127.0.0.1 (stdlib, in a thread) answering
`POST /v1/messages`. It records every request (body and headers) and answers the way the API
answers a forced tool call: one `tool_use` block for the requested tool, `stop_reason:
"tool_use"`, `usage`, and the requested model echoed back. Point the SDK at `base_url`
(`AnthropicProvider(base_url=...)`, or `ANTHROPIC_BASE_URL` for agent processes).

What the tool input is, in order:

1. a scripted reply (`script(...)`), consumed first-in first-out by the next requests:
   `rate_limited(retry_after=...)` (429 with a Retry-After header), `overloaded()` (529
   `overloaded_error`), `api_error(status, type)`, `invalid(input)` (a 200 whose tool input
   does not fit the schema), `answer(input)`, `no_tool_call()`;
2. `responder(tool_name, input_schema, request_body)` when given;
3. `answers[tool_name]`, then `answers[input_schema["title"]]` — by default `DEFAULT_ANSWERS`,
   valid answers for Counterpoint's four outputs (a dual-intent ticket: billing and account);
4. an instance built from the input schema (`example_from_schema`).

Multi-turn tool use (the agentic loop): `tool_calls(("list_invoices", {...}), ...)` answers with
those `tool_use` blocks (`stop_reason: "tool_use"`), whatever tool was asked for; `text(...)`
answers with text only. `replier(request_body)` — consulted when no scripted reply is queued —
may return a `Reply` per request, so concurrent conversations can be scripted by content;
`tools_then_answer(pick)` builds one that calls the tools `pick` chooses on a conversation's
first tool turn and answers afterwards. When tools are offered with `tool_choice` `auto` or
`any` and nothing is scripted, the reply calls the output tool (the one named `record_*`), as
a model that answers at once would. `Recorded` exposes what was offered (`tools_offered`,
`tool_choice`), the `tool_result` blocks sent back (`tool_results`) and what the reply called
(`called`).

A model listed in `overloaded_models` always answers 529. Usage is `usage(request_body,
tool_input)` (default: grows with the request and answer sizes, so sums are checkable);
`reported_usage()` sums what every successful reply reported.

    with MessagesAPI() as api:
        api.script(overloaded())
        provider = AnthropicProvider("test-key", base_url=api.base_url)
        ...
        assert [r.model for r in api.requests] == ["claude-sonnet-4-6", "claude-haiku-4-5"]

`python -m tests.support.messages_api [PORT]` runs one in the foreground.
"""

from __future__ import annotations

import copy
import itertools
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Responder = Callable[[str, Mapping[str, Any], Mapping[str, Any]], Mapping[str, Any]]
ToolCallSpec = tuple[str, Mapping[str, Any]]
UsageOf = Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[int, int]]

# Valid answers for Counterpoint's outputs (agents/llm/outputs.py), by schema title.
DEFAULT_ANSWERS: dict[str, dict[str, Any]] = {
    "TicketAssessment": {
        "intents": ["billing", "account"], "category": "billing+account", "priority": "high",
        "rationale": "A double charge and a locked account: two needs."},
    "AlertAssessment": {
        "severity": "critical", "category": "availability",
        "focuses": ["logs", "metrics", "deploys"],
        "rationale": "Error rate above threshold on a customer-facing service."},
    "InvestigationSummary": {
        "summary": "The facts gathered explain the problem.",
        "recommended_actions": ["Confirm with the customer"]},
    "Composition": {
        "text": "Thank you for your patience. We found the cause and are fixing it.",
        "priority": "high",
        "proposed_actions": [{"action": "refund duplicate charge", "target": "INV-2291",
                              "risk": "low"}]},
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `status` 200 answers with a tool call (`tool_input` if given);
    any other status answers with the API's error body (`error_type`)."""

    status: int = 200
    tool_input: Mapping[str, Any] | None = None
    error_type: str = "api_error"
    message: str = "scripted error"
    headers: Mapping[str, str] = field(default_factory=dict)
    call_tool: bool = True
    delay_s: float = 0.0
    # Call these tools (name, input) instead of the requested one: a tool-use turn.
    tool_uses: tuple[ToolCallSpec, ...] = ()
    text: str | None = None


def rate_limited(retry_after: float | None = 2.0) -> Reply:
    headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
    return Reply(status=429, error_type="rate_limit_error",
                 message="Number of request tokens has exceeded your per-minute rate limit",
                 headers=headers)


def overloaded() -> Reply:
    return Reply(status=529, error_type="overloaded_error", message="Overloaded")


def api_error(status: int, error_type: str = "invalid_request_error",
              message: str = "scripted error") -> Reply:
    return Reply(status=status, error_type=error_type, message=message)


def invalid(tool_input: Mapping[str, Any]) -> Reply:
    """A 200 whose tool input does not fit the tool's schema."""
    return Reply(tool_input=tool_input)


def answer(tool_input: Mapping[str, Any], *, delay_s: float = 0.0) -> Reply:
    return Reply(tool_input=tool_input, delay_s=delay_s)


def slow(delay_s: float) -> Reply:
    """The default answer, after `delay_s` seconds."""
    return Reply(delay_s=delay_s)


def no_tool_call() -> Reply:
    """A 200 with text only, as if the model stopped before calling the tool."""
    return Reply(call_tool=False)


def tool_calls(*calls: ToolCallSpec, text: str | None = None) -> Reply:
    """A turn that asks for these tools (in one message), optionally after some text."""
    return Reply(tool_uses=tuple((name, dict(arguments)) for name, arguments in calls),
                 text=text)


def text(words: str) -> Reply:
    """A 200 with only this text (`stop_reason: "end_turn"`)."""
    return Reply(call_tool=False, text=words)


Replier = Callable[[Mapping[str, Any]], "Reply | None"]


def tools_then_answer(pick: Callable[[Mapping[str, Any]], list[ToolCallSpec]]) -> Replier:
    """A model that, on a conversation's first turn with tools it may choose (not forced),
    calls what `pick(request_body)` returns (nothing: it answers at once); once tool results
    came back, it answers."""

    def reply(body: Mapping[str, Any]) -> Reply | None:
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool" or tool_results_in(body):
            return None
        calls = pick(body)
        return tool_calls(*calls) if calls else None

    return reply


def tool_results_in(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of a request's last message."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content") if isinstance(last, dict) else None
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


@dataclass(frozen=True)
class Recorded:
    """One request the server received, and what it answered."""

    body: dict[str, Any]
    headers: dict[str, str]  # lower-case names
    status: int
    response: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body.get("model"))

    @property
    def tool_name(self) -> str | None:
        """The tool the request forced; when none was forced, the first one the reply called."""
        choice = self.body.get("tool_choice") or {}
        if isinstance(choice, dict) and choice.get("type") == "tool":
            return choice.get("name")
        called = self.called
        return called[0] if called else None

    @property
    def tool_choice(self) -> dict[str, Any]:
        choice = self.body.get("tool_choice") or {}
        return dict(choice) if isinstance(choice, dict) else {}

    @property
    def tools_offered(self) -> list[str]:
        return [str(t.get("name")) for t in self.body.get("tools") or [] if isinstance(t, dict)]

    @property
    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks this request sent back (in its last message)."""
        return tool_results_in(self.body)

    @property
    def called(self) -> list[str]:
        """The tools the reply asked for, in order."""
        return [str(b.get("name")) for b in self.response.get("content") or []
                if isinstance(b, dict) and b.get("type") == "tool_use"]

    @property
    def usage(self) -> tuple[int, int]:
        u = self.response.get("usage") or {}
        return (int(u.get("input_tokens", 0)) + int(u.get("cache_read_input_tokens") or 0)
                + int(u.get("cache_creation_input_tokens") or 0), int(u.get("output_tokens", 0)))


def default_usage(body: Mapping[str, Any], tool_input: Mapping[str, Any]) -> tuple[int, int]:
    return (10 + len(json.dumps(body)) // 4, 5 + len(json.dumps(tool_input)) // 4)


class _Server(ThreadingHTTPServer):
    # The stdlib's listen backlog of 5 overflows when dozens of clients connect at once
    # (the bench's model scenario: 64+ calls in flight, a connection each); the kernel then
    # drops them and the SDK sees ReadError. The real API accepts them all.
    request_queue_size = 1024


class MessagesAPI:
    def __init__(self, *, answers: Mapping[str, Mapping[str, Any]] | None = None,
                 responder: Responder | None = None, usage: UsageOf = default_usage,
                 overloaded_models: Iterable[str] = (), replier: Replier | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.answers: dict[str, Mapping[str, Any]] = dict(
            DEFAULT_ANSWERS if answers is None else answers)
        self.responder = responder
        self.replier = replier
        self.usage = usage
        self.overloaded_models = set(overloaded_models)
        self.requests: list[Recorded] = []
        self._scripted: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = _Server((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MessagesAPI:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="fake-messages-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> MessagesAPI:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- scripting and inspection --------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order, before the default answers."""
        with self._lock:
            self._scripted.extend(replies)

    @property
    def pending_script(self) -> int:
        with self._lock:
            return len(self._scripted)

    def models(self) -> list[str]:
        return [r.model for r in self.recorded()]

    def recorded(self) -> list[Recorded]:
        with self._lock:
            return list(self.requests)

    def reported_usage(self) -> tuple[int, int]:
        """(input, output) tokens summed over every successful reply."""
        ok = [r.usage for r in self.recorded() if r.status == 200]
        return sum(u[0] for u in ok), sum(u[1] for u in ok)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._scripted.clear()
        self.replier = None

    # --- answering -----------------------------------------------------------------------------

    def _next(self, body: Mapping[str, Any]) -> Reply | None:
        with self._lock:
            if body.get("model") in self.overloaded_models:
                return overloaded()
            if self._scripted:
                return self._scripted.popleft()
            replier = self.replier
        return replier(body) if replier is not None else None

    def _answer(self, body: Mapping[str, Any], reply: Reply | None
                ) -> tuple[int, dict[str, str], dict[str, Any]]:
        n = next(self._ids)
        headers = {"request-id": f"req_fake_{n:06d}", **(reply.headers if reply else {})}
        if reply is not None and reply.status != 200:
            return reply.status, headers, {
                "type": "error", "error": {"type": reply.error_type, "message": reply.message},
                "request_id": headers["request-id"]}
        tool = _forced_tool(body)
        if reply is not None and reply.tool_uses:
            content: list[dict[str, Any]] = (
                [{"type": "text", "text": reply.text}] if reply.text else [])
            for k, (name, arguments) in enumerate(reply.tool_uses):
                content.append({"type": "tool_use", "id": f"toolu_fake_{n:06d}_{k}",
                                "name": name, "input": copy.deepcopy(dict(arguments))})
            tool_input: Mapping[str, Any] = {"tool_uses": [dict(a) for _, a in reply.tool_uses]}
            stop = "tool_use"
        elif tool is None or (reply is not None and not reply.call_tool):
            words = (reply.text if reply is not None and reply.text else
                     "I will not call a tool." if tool is not None else "Hello from the fake API.")
            content = [{"type": "text", "text": words}]
            tool_input = {"text": words}
            stop = "end_turn"
        else:
            name, schema = str(tool["name"]), tool.get("input_schema") or {}
            if reply is not None and reply.tool_input is not None:
                tool_input = reply.tool_input
            else:
                tool_input = self._tool_input(name, schema, body)
            content = [{"type": "tool_use", "id": f"toolu_fake_{n:06d}", "name": name,
                        "input": copy.deepcopy(dict(tool_input))}]
            stop = "tool_use"
        input_tokens, output_tokens = self.usage(body, tool_input)
        return 200, headers, {
            "id": f"msg_fake_{n:06d}", "type": "message", "role": "assistant",
            "model": body.get("model"), "content": content, "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }

    def _tool_input(self, name: str, schema: Mapping[str, Any],
                    body: Mapping[str, Any]) -> Mapping[str, Any]:
        if self.responder is not None:
            return self.responder(name, schema, body)
        for key in (name, schema.get("title")):
            if isinstance(key, str) and key in self.answers:
                return self.answers[key]
        produced = example_from_schema(schema)
        return produced if isinstance(produced, dict) else {}


def _forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The tool the reply calls by default: the forced one; under `auto`/`any`, the output tool
    (`record_*`; under `any`, else the first)."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    choice = body.get("tool_choice") or {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    if kind in ("auto", "any"):
        output = next((t for t in tools if str(t.get("name", "")).startswith("record_")), None)
        return output or (tools[0] if kind == "any" and tools else None)
    return None


def _handler(api: MessagesAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeMessagesAPI/1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path.split("?")[0] != "/v1/messages":
                self._send(404, {}, {"type": "error", "error": {
                    "type": "not_found_error", "message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {}, {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "body is not JSON"}})
                return
            out_headers: dict[str, str] = {}
            if not headers.get("x-api-key") and not headers.get("authorization"):
                status, response = 401, {"type": "error", "error": {
                    "type": "authentication_error", "message": "x-api-key header is required"}}
                reply: Reply | None = None
            else:
                reply = api._next(body)
                status, out_headers, response = api._answer(body, reply)
            with api._lock:
                api.requests.append(Recorded(body, headers, status, response))
            if reply is not None and reply.delay_s:
                time.sleep(reply.delay_s)
            self._send(status, out_headers, response)

        def _send(self, status: int, headers: Mapping[str, str],
                  response: Mapping[str, Any]) -> None:
            data = json.dumps(response).encode()
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to tell it

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def example_from_schema(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """A small value valid for `schema` (the JSON Schema subset pydantic produces)."""
    root = schema if root is None else root
    if "$ref" in schema:
        ref = str(schema["$ref"])
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return example_from_schema(target, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return example_from_schema(options[0], root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = schema.get("required") or []
        return {name: example_from_schema(props[name], root) for name in required
                if name in props}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [example_from_schema(schema.get("items") or {}, root) for _ in range(count)]
    if kind == "string":
        return "x" * max(1, int(schema.get("minLength") or 1))
    if kind == "integer":
        return int(schema.get("minimum") or 0)
    if kind == "number":
        return float(schema.get("minimum") or 0)
    if kind == "boolean":
        return False
    return None


if __name__ == "__main__":
    with MessagesAPI(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0) as fake:
        print(f"fake Messages API at {fake.base_url} (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
