"""Scaling by starting more processes: two billing processes share one consumer group."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra.publishing import publish
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config, wait_results

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REQUESTS = 24


@pytest.fixture(scope="module")
def two_billing(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"),
                       {**dict.fromkeys(AGENT_NAMES, 1), "billing": 2})
    try:
        stack.wait_joined()
        yield stack
    finally:
        stack.stop()


def _last_assignment(log: str) -> list[str]:
    lines = [line for line in log.splitlines() if " assigned " in line]
    assert lines, log
    return re.findall(r"(\S+\[\d+\])", lines[-1].split("partitions:", 1)[1])


def _handled(log: str) -> int:
    found = re.findall(r"stopped: handled (\d+)", log)
    assert found, log[-2000:]
    return int(found[-1])


async def test_two_processes_of_one_investigator_share_the_work(two_billing: AgentStack) -> None:
    billing = [p for p in two_billing.supervisor.processes if p.name == "billing"]
    assert len(billing) == 2 and billing[0].popen.pid != billing[1].popen.pid

    ids = [f"T-scale-{uuid.uuid4().hex[:8]}" for _ in range(REQUESTS)]
    # Distinct texts: identical tickets would share one task key and be investigated once
    # (agents/reuse.py), all in one process.
    receipts = [await publish(config(two_billing.bootstrap), "ticket", orjson.dumps(
        {"id": tid, "customer_id": "C-42", "body": f"Why was my invoice charged twice? ({tid})"}),
        "test") for tid in ids]
    wanted = {r.request_id for r in receipts}

    done = await wait_results(two_billing.bootstrap, lambda r: r.request_id in wanted,
                              count=REQUESTS, timeout_s=120)
    assert {r.request_id for r in done} == wanted
    assert all(r.status == "complete" for r in done)

    two_billing.stop()  # agents log how much they handled when they leave cleanly
    logs = [p.log_path.read_text() for p in billing]
    assignments = [_last_assignment(log) for log in logs]
    assert all(assignments), assignments  # both got partitions
    assert not set(assignments[0]) & set(assignments[1])  # and never the same one
    counts = [_handled(log) for log in logs]
    assert all(c > 0 for c in counts), counts
    assert sum(counts) >= REQUESTS
