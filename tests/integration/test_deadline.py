"""A missing investigator never hangs a request: the deadline gives a partial result."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import publish
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config, wait_results

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def without_account(bootstrap: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    scale = {name: 1 for name in AGENT_NAMES if name != "account"}
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"), scale,
                       extra_env={"COUNTERPOINT_SYNTHESIS_DEADLINE_S": "3"})
    try:
        stack.wait_joined()
        yield stack
    finally:
        stack.stop()


async def test_missing_findings_give_a_partial_result_naming_them(
        without_account: AgentStack) -> None:
    body = orjson.loads(example("ticket_dual_intent.json"))
    body["id"] = f"T-partial-{uuid.uuid4().hex[:8]}"
    receipt = await publish(config(without_account.bootstrap), "ticket", orjson.dumps(body),
                            "test")

    (result,) = await wait_results(without_account.bootstrap,
                                   lambda r: r.request_id == receipt.request_id, timeout_s=60)

    assert result.status == "partial"
    assert any(m.startswith("account") for m in result.missing), result.missing
    assert "billing" in {f.skill for f in result.findings}
    assert "still checking" in result.text
    # The deadline fires once: no second result for the request.
    assert len(await wait_results(without_account.bootstrap,
                                  lambda r: r.request_id == receipt.request_id, count=2,
                                  timeout_s=4)) == 1
