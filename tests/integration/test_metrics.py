"""A real Prometheus scrapes real agent processes and sees their counters move.

Every agent of the built-in pipeline runs as its own process with COUNTERPOINT_METRICS_PORT=0:
each serves /metrics on a free port of 127.0.0.1 and announces it in $COUNTERPOINT_HOME/metrics/,
which Prometheus reads as file-based service discovery (the scheme docs/operations.md gives
for many processes on one host). Prometheus also loads the shipped alert rules. Debian's
`prometheus` is installed when missing (tests/support/debian.py), or the module is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra.broker import free_port
from counterpoint.infra.demo import example
from counterpoint.topics.registry import INTAKE_TICKETS, SYNTHESIS_RESULTS
from tests.integration.conftest import AgentStack, running_pipeline
from tests.integration.helpers import collect, send_raw
from tests.support.debian import debian_binary
from tests.support.served import Served

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"

CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules}
scrape_configs:
  - job_name: counterpoint-agents
    file_sd_configs:
      - files: ["{targets}/*.json"]
        refresh_interval: 1s
"""


class Prometheus:
    def __init__(self, binary: str, home: Path, targets: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = home / "prometheus.yml"
        config.write_text(CONFIG.format(rules=RULES, targets=targets))
        self.served = Served(
            "prometheus",
            [binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            home / "prometheus.log",
            lambda: httpx.get(self.url + "/-/ready", timeout=1).status_code == 200)

    def query(self, expr: str) -> float | None:
        """The value of an instant query that returns one number (None: no series)."""
        r = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5)
        r.raise_for_status()
        found = r.json()["data"]["result"]
        assert len(found) <= 1, found
        return float(found[0]["value"][1]) if found else None

    def wait_for(self, expr: str, ok: float, timeout_s: float = 60) -> float:
        """Poll `expr` until it reaches `ok`; the last value is returned."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.query(expr)
            if last is not None and last >= ok:
                return last
            time.sleep(0.5)
        raise AssertionError(f"{expr} stayed at {last} (wanted >= {ok})\n"
                             + self.served.log.read_text()[-2000:])

    def stop(self) -> None:
        self.served.stop()


@pytest.fixture(scope="module")
def stack(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    with running_pipeline(bootstrap, tmp_path_factory.mktemp("home"),
                          {"COUNTERPOINT_METRICS_PORT": "0"}) as agents:
        yield agents


@pytest.fixture(scope="module")
def prometheus(stack: AgentStack,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(debian_binary("prometheus", ("prometheus",)),
                        tmp_path_factory.mktemp("prometheus"), stack.home / "metrics")
    yield server
    server.stop()


TRIAGE_IN = ('sum(messaging_client_consumed_messages_total{counterpoint_agent="triage",'
             'messaging_destination_name="intake.tickets"})')


async def test_prometheus_finds_every_agent_and_sees_its_counters_move(
        stack: AgentStack, prometheus: Prometheus) -> None:
    processes = len(stack.supervisor.processes)
    assert prometheus.wait_for('count(up{job="counterpoint-agents"} == 1)', processes) \
        == processes  # every agent process announced itself and answers
    before = prometheus.wait_for(f"{TRIAGE_IN} or vector(0)", 0)
    finished_before = prometheus.wait_for("sum(counterpoint_requests_finished_total) "
                                          "or vector(0)", 0)

    await send_raw(stack.bootstrap, INTAKE_TICKETS.name, example("ticket_dual_intent.json"),
                   key=b"T-1001")
    await send_raw(stack.bootstrap, INTAKE_TICKETS.name, b"{not json", key=b"bad")
    got = await collect(stack.bootstrap, SYNTHESIS_RESULTS.name, lambda rs: len(rs) >= 1, 120)
    assert got, stack.logs()

    # Counters move: both records in, the bad one dead-lettered with its reason, one result.
    await asyncio.to_thread(prometheus.wait_for, TRIAGE_IN, before + 2)
    assert await asyncio.to_thread(prometheus.wait_for, (
        'sum(counterpoint_messages_deadlettered_total{counterpoint_agent="triage",'
        'counterpoint_deadletter_reason="undecodable"})'), 1) >= 1
    await asyncio.to_thread(prometheus.wait_for, "sum(counterpoint_requests_finished_total)",
                            finished_before + 1)
    assert await asyncio.to_thread(prometheus.wait_for,
                                   "sum(counterpoint_request_duration_seconds_count)", 1) >= 1
    # Model calls of triage, each investigation and synthesis, with their tokens.
    assert await asyncio.to_thread(prometheus.wait_for, (
        "count(sum by (counterpoint_agent) (gen_ai_client_operation_duration_seconds_count))"),
        3) >= 3
    assert (prometheus.query('sum(gen_ai_client_token_usage_sum{gen_ai_token_type="output"})')
            or 0) > 0
    sent = prometheus.query('sum(messaging_client_sent_messages_total{counterpoint_agent='
                            '"triage",messaging_destination_name="triage.decisions"})')
    assert sent is not None and sent >= 1
    # Lag and in-flight are reported for the partitions each process owns.
    assert (prometheus.query("count(counterpoint_consumer_lag)") or 0) >= len(AGENT_NAMES)
    assert prometheus.query('sum(counterpoint_messages_in_flight{counterpoint_agent="triage"})') \
        is not None
    # The shipped alert rules loaded in this real Prometheus.
    answer = await asyncio.to_thread(httpx.get, prometheus.url + "/api/v1/rules", timeout=5)
    rules = answer.json()["data"]["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} == {
        "CounterpointConsumerLagStuck", "CounterpointDeadLetterRate",
        "CounterpointPartialResults", "CounterpointAgentDown"}
