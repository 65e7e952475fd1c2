"""The whole pipeline reasoning through the real `anthropic` SDK, one OS process per agent,
against a local server that speaks the Messages API (no key or network needed): first with a
model that answers at once, then with one that calls the investigators' tools first."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.llm.routing import HAIKU, SONNET
from counterpoint.agents.tools.config import BUILTIN_ALLOWLISTS
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import publish
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config, wait_results
from tests.support.messages_api import MessagesAPI, ToolCallSpec, tools_then_answer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

# Generous: each agent process imports the SDK on its first call, which takes tens of seconds
# on a loaded machine. A wait, not a speed assertion.
WAIT_S = 200.0


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesAPI]:
    with MessagesAPI() as server:
        yield server


@pytest.fixture(scope="module")
def claude_stack(bootstrap: str, api: MessagesAPI,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"), dict.fromkeys(AGENT_NAMES, 1),
                       extra_env={"ANTHROPIC_API_KEY": "test-key",
                                  "ANTHROPIC_BASE_URL": api.base_url,
                                  # The first calls wait for the SDK import (see WAIT_S).
                                  "COUNTERPOINT_SYNTHESIS_DEADLINE_S": str(WAIT_S)})
    try:
        stack.wait_joined()
        yield stack
    finally:
        stack.stop()


async def test_a_ticket_is_answered_through_the_anthropic_sdk(claude_stack: AgentStack,
                                                               api: MessagesAPI) -> None:
    body = orjson.loads(example("ticket_dual_intent.json"))
    body["id"] = f"T-claude-{uuid.uuid4().hex[:8]}"
    before = len(api.requests)
    receipt = await publish(config(claude_stack.bootstrap), "ticket", orjson.dumps(body), "test")

    (result,) = await wait_results(claude_stack.bootstrap,
                                   lambda r: r.request_id == receipt.request_id,
                                   timeout_s=WAIT_S)

    assert result.status == "complete"
    assert result.generation.provider == "anthropic" and not result.generation.offline
    assert result.generation.model == SONNET
    assert not result.usage.estimated and result.usage.calls == 5  # triage, 3 findings, reply
    calls = api.requests[before:]
    assert len(calls) == 5
    models = sorted(call.model for call in calls)
    assert models == sorted([HAIKU] * 4 + [SONNET])  # cheap model everywhere but synthesis
    assert result.usage.input_tokens == sum(c.response["usage"]["input_tokens"] for c in calls)
    for call in calls:
        # Structured output through the output tool: forced for triage and synthesis; offered
        # (last) to investigators next to their tools, which this model answers with at once.
        assert call.tool_name is not None and call.tool_name.startswith("record_")
        assert call.called == [call.tool_name]
        assert call.tools_offered[-1] == call.tool_name
        assert call.headers.get("authorization") or call.headers.get("x-api-key")


def _context(body: Mapping[str, Any]) -> dict[str, Any]:
    """The quoted JSON context block the provider sends after the case text."""
    for block in body["messages"][0]["content"]:
        text = block.get("text", "")
        if text.startswith("<context>"):
            return dict(json.loads(text.split("\n")[2]))
    return {}


def _investigator_picks(body: Mapping[str, Any]) -> list[ToolCallSpec]:
    """What a sensible model would look up first, from the tools it was offered."""
    offered = {t["name"] for t in body.get("tools") or []}
    subject = _context(body).get("subject") or {}
    customer = subject.get("customer_id")
    calls: list[ToolCallSpec] = []
    if "list_invoices" in offered and customer:
        calls.append(("list_invoices", {"customer_id": customer}))
    if "get_account_status" in offered and customer:
        calls += [("get_account_status", {"customer_id": customer}),
                  ("list_login_events", {"customer_id": customer})]
    if offered == {"search_knowledge_base", "record_investigation_summary"}:
        calls.append(("search_knowledge_base", {"queries": [subject.get("title") or "help"]}))
    return calls


async def test_investigators_call_their_tools_and_the_trace_shows_each_call(
        claude_stack: AgentStack, api: MessagesAPI) -> None:
    body = orjson.loads(example("ticket_dual_intent.json"))
    body["id"] = f"T-tools-{uuid.uuid4().hex[:8]}"
    # A ticket identical to the other test's would reuse its findings (agents/reuse.py).
    body["body"] += f" (ref {body['id']})"
    before = len(api.requests)
    api.replier = tools_then_answer(_investigator_picks)
    try:
        receipt = await publish(config(claude_stack.bootstrap), "ticket", orjson.dumps(body),
                                "test")
        (result,) = await wait_results(claude_stack.bootstrap,
                                       lambda r: r.request_id == receipt.request_id,
                                       timeout_s=WAIT_S)
    finally:
        api.replier = None

    assert result.status == "complete"
    # triage 1, billing 2, account 2, knowledge 2 (a tool turn, then the answer), synthesis 1
    assert result.usage.calls == 8
    calls = [c for c in api.requests[before:] if body["id"] in json.dumps(c.body)]
    assert result.usage.input_tokens == sum(c.response["usage"]["input_tokens"] for c in calls)
    returned = {c.called[0]: c for c in calls if c.called and c.tool_choice["type"] == "auto"
                and not c.called[0].startswith("record_")}
    assert set(returned) == {"list_invoices", "get_account_status", "search_knowledge_base"}
    results = [b for c in calls for b in c.tool_results]
    assert len(results) == 4 and not any(b["is_error"] for b in results)
    # The facts the tools returned are the findings' facts.
    billing = next(f for f in result.findings if f.skill == "billing")
    assert billing.facts[0].source == "billing.invoices/INV-2291"
    assert "charged twice" in billing.facts[0].text

    await asyncio.sleep(1)  # agents export their spans every 200 ms
    exe = Path(sys.executable).with_name("counterpoint")
    traced = await asyncio.to_thread(
        subprocess.run, [str(exe), "trace", receipt.request_id, "--json"], env=claude_stack.env,
        capture_output=True, text=True, timeout=60, check=False)
    assert traced.returncode == 0, traced.stderr
    spans = [json.loads(line) for line in traced.stdout.splitlines() if line.strip()]
    assert len({s["trace_id"] for s in spans}) == 1
    by_id = {s["span_id"]: s for s in spans}
    tools = {(s["service.name"], s["name"]): s for s in spans if s["name"].startswith("tool ")}
    # An action policy approved may have run by now: the executor's call of its action tool is
    # in the same trace (an action tool, never a read), and is not inside a model call.
    actions = {key for key in tools if key[0] == "executor"}
    assert {f"business.{name.removeprefix('tool ')}" for _, name in actions} <= set(
        BUILTIN_ALLOWLISTS["executor"])
    # The investigators' calls, and synthesis's customer lookup (code, through the same layer).
    assert set(tools) - actions == {("billing", "tool list_invoices"),
                          ("account", "tool get_account_status"),
                          ("account", "tool list_login_events"),
                          ("knowledge", "tool search_knowledge_base"),
                          ("synthesis", "tool lookup_customer")}
    for (service, _), span in tools.items():
        attrs = span["attributes"]
        assert attrs["counterpoint.request_id"] == receipt.request_id
        assert attrs["counterpoint.agent"] == service
        assert attrs["counterpoint.tool.outcome"] == "ok"
        assert "C-42" not in json.dumps(attrs)  # no tool input in spans
        if service in ("synthesis", "executor"):
            continue  # called by code (composing, acting), not inside a model call
        # Under the request: inside the model call of the agent's handling of its task.
        ancestors = []
        parent = by_id.get(span["parent_id"] or "")
        while parent is not None:
            ancestors.append(parent["name"])
            parent = by_id.get(parent["parent_id"] or "")
        assert ancestors[0].startswith("chat "), ancestors
        assert f"process investigation.tasks.{service}" in ancestors
        assert ancestors[-1] == "process intake.tickets"  # triage's; the test sent it untraced
