"""The whole pipeline reasoning through the real `anthropic` SDK, one OS process per agent,
against a local server that speaks the Messages API (no key or network needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.llm.routing import HAIKU, SONNET
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import publish
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config, wait_results
from tests.support.messages_api import MessagesAPI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def api() -> Iterator[MessagesAPI]:
    with MessagesAPI() as server:
        yield server


@pytest.fixture(scope="module")
def claude_stack(bootstrap: str, api: MessagesAPI,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"), dict.fromkeys(AGENT_NAMES, 1),
                       extra_env={"ANTHROPIC_API_KEY": "test-key",
                                  "ANTHROPIC_BASE_URL": api.base_url})
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
                                   lambda r: r.request_id == receipt.request_id)

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
        assert call.body["tool_choice"]["type"] == "tool"  # structured output is forced
        assert call.headers.get("authorization") or call.headers.get("x-api-key")
