"""The metrics instruments (bus/metrics.py, agents/metrics.py), read with an in-memory reader.

The bus is the in-memory one; the agents are the built-in pipeline's, so the counts are the
ones the real runtime code makes. Values are cumulative over the test session (one global
meter provider per process), so each test compares before and after.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.budget import metered, metering
from counterpoint.agents.context import AgentContext
from counterpoint.agents.cost import PriceTable
from counterpoint.agents.llm.offline import OFFLINE_MODEL, OfflineProvider
from counterpoint.agents.llm.outputs import Composition
from counterpoint.agents.llm.provider import LLMRequest
from counterpoint.bus.agent import Agent, Emit, Incoming
from counterpoint.bus.delivery import RetryPolicy
from counterpoint.bus.errors import TransientError
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.metrics import announce
from counterpoint.schemas.events import Finding, Generation, Ticket, Usage
from counterpoint.topics.registry import INTAKE_TICKETS, INVESTIGATION_FINDINGS
from counterpoint_demo.store import BusinessStore
from tests.support.demo_business import demo_context
from tests.support.webhook_receiver import Receiver
from tests.unit.test_approvals import KEYS, _decide, _pipeline, _ticket
from tests.unit.test_gateway import app as gateway_app
from tests.unit.test_gateway import client as gateway_client
from tests.unit.test_webhooks import LOOPBACK_ALLOWED, deliver, result
from tests.unit.test_webhooks import context as webhook_context

Key = frozenset[tuple[str, Any]]
PRICED = PriceTable.configured(orjson.dumps({OFFLINE_MODEL: {"input": 1000, "output": 1000}})
                               .decode())


def points(reader: InMemoryMetricReader, name: str) -> dict[Key, Any]:
    """The data points of metric `name`, by their attributes."""
    found: dict[Key, Any] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[frozenset(point.attributes.items())] = point
    return found


def value(reader: InMemoryMetricReader, name: str, **attrs: Any) -> float:
    """Sum (or histogram count) over the points of `name` whose attributes include `attrs`."""
    wanted = {k.replace("__", "."): v for k, v in attrs.items()}
    total = 0.0
    for key, point in points(reader, name).items():
        if wanted.items() <= dict(key).items():
            total += getattr(point, "count", None) or getattr(point, "value", 0)
    return total


def hist_sum(reader: InMemoryMetricReader, name: str, **attrs: Any) -> float:
    wanted = {k.replace("__", "."): v for k, v in attrs.items()}
    return sum(p.sum for k, p in points(reader, name).items() if wanted.items() <= dict(k).items())


def _relay(name: str) -> Agent:
    """Ticket -> finding; T-retry fails once (retriable), T-bug always (a handler bug)."""
    agent = Agent(name, emits=[INVESTIGATION_FINDINGS])
    tries: dict[str, int] = {}

    @agent.handles(INTAKE_TICKETS)
    async def on_ticket(event: Incoming[Ticket]) -> list[Emit]:
        tid = event.data.id
        tries[tid] = tries.get(tid, 0) + 1
        if tid == "T-retry" and tries[tid] == 1:
            raise TransientError("overloaded")
        if tid == "T-bug":
            raise ValueError("a handler bug")
        finding = Finding(task_id=tid, request_id=tid, skill="billing", focus="charges",
                          agent=name, summary="ok", facts=[],
                          generation=Generation(provider="offline", model="m", offline=True),
                          usage=Usage(calls=1))
        return [Emit(INVESTIGATION_FINDINGS, finding, key=tid)]

    return agent


async def test_bus_counts_consumed_sent_retried_and_deadlettered_per_agent_and_topic(
        metrics_reader: InMemoryMetricReader) -> None:
    bus = MemoryBus()
    delivery = bus.add(_relay("metrics-relay"))
    delivery.retry = RetryPolicy(max_attempts=3, base_delay_s=0.0001, max_delay_s=0.001)
    for tid in ("T-1", "T-retry", "T-bug"):
        await bus.publish(INTAKE_TICKETS.name, orjson.dumps({"id": tid, "body": "x"}),
                          key=tid.encode())
    await bus.publish(INTAKE_TICKETS.name, b"{not json", key=b"bad")
    await bus.run_until_idle()

    r, me = metrics_reader, {"counterpoint__agent": "metrics-relay"}
    source = {**me, "messaging__destination__name": INTAKE_TICKETS.name}
    assert value(r, "messaging.client.consumed.messages", **source) == 4
    assert value(r, "messaging.client.sent.messages", **me,
                 messaging__destination__name=INVESTIGATION_FINDINGS.name) == 2
    assert value(r, "counterpoint.messages.handled", **source) == 2
    assert value(r, "counterpoint.messages.retried", **source) == 1
    assert value(r, "counterpoint.messages.deadlettered", **source,
                 counterpoint__deadletter__reason="handler-error") == 1
    assert value(r, "counterpoint.messages.deadlettered", **source) == 2  # + the bad JSON
    durations = points(r, "messaging.process.duration")
    ok = [p for k, p in durations.items() if dict(k).get("counterpoint.agent") ==
          "metrics-relay" and "error.type" not in dict(k)]
    failed = [p for k, p in durations.items() if dict(k).get("error.type") == "ValueError"
              and dict(k).get("counterpoint.agent") == "metrics-relay"]
    assert sum(p.count for p in ok) == 2 and sum(p.count for p in failed) == 1
    assert dict(next(iter(durations))).get("messaging.system") == "kafka"


def _ctx(tmp_path: Path, policy: ApprovalPolicy) -> AgentContext:
    provider = metered(OfflineProvider(), PRICED, "metered-pipeline")
    return demo_context(BusinessStore.open(tmp_path / "demo-business.db"), provider=provider,
                        approvals=policy, keys=KEYS)


async def test_pipeline_counts_model_calls_results_latency_and_approvals(
        tmp_path: Path, metrics_reader: InMemoryMetricReader) -> None:
    r = metrics_reader
    llm = {"counterpoint__agent": "metered-pipeline", "gen_ai__provider__name": "offline"}
    before = {
        "calls": value(r, "gen_ai.client.operation.duration", **llm),
        "cost": value(r, "counterpoint.llm.cost_usd", **llm),
        "in": hist_sum(r, "gen_ai.client.token.usage", **llm, gen_ai__token__type="input"),
        "out": hist_sum(r, "gen_ai.client.token.usage", **llm, gen_ai__token__type="output"),
        "complete": value(r, "counterpoint.requests.finished",
                          **{"counterpoint.request.status": "complete"}),
        "latency": value(r, "counterpoint.request.duration"),
        "decided": value(r, "counterpoint.approvals.decided",
                         counterpoint__approval__decision="approved"),
        "expired": value(r, "counterpoint.approvals.expired"),
    }
    bus, agents = _pipeline(_ctx(tmp_path, ApprovalPolicy(ttl=timedelta(hours=1))))
    # Desks of earlier tests may still be alive in this process: count from what they hold.
    gc.collect()
    waiting = value(r, "counterpoint.approvals.waiting", counterpoint__agent="approvals")
    book = await _ticket(bus)

    # triage, each investigation and synthesis: one call of the offline model each
    calls = 2 + len(bus.records(INVESTIGATION_FINDINGS.name))
    assert value(r, "gen_ai.client.operation.duration", **llm) - before["calls"] == calls
    assert hist_sum(r, "gen_ai.client.token.usage", **llm,
                    gen_ai__token__type="input") > before["in"]
    assert value(r, "counterpoint.llm.cost_usd", **llm, gen_ai__response__model=OFFLINE_MODEL
                 ) > before["cost"]
    assert hist_sum(r, "gen_ai.client.token.usage", **llm,
                    gen_ai__token__type="output") > before["out"]
    assert value(r, "counterpoint.requests.finished",
                 **{"counterpoint.request.status": "complete"}) - before["complete"] == 1
    assert value(r, "counterpoint.request.duration") - before["latency"] == 1
    # The dual-intent ticket proposes two risky actions: both wait at the desk.
    assert value(r, "counterpoint.approvals.waiting",
                 counterpoint__agent="approvals") - waiting == 2

    await _decide(bus, book, "refund", "approve")
    await bus.run_until_idle()
    assert value(r, "counterpoint.approvals.decided",
                 counterpoint__approval__decision="approved") - before["decided"] == 1
    assert value(r, "counterpoint.approvals.waiting",
                 counterpoint__agent="approvals") - waiting == 1
    assert value(r, "counterpoint.approvals.expired") == before["expired"]
    del agents


async def test_expiry_is_counted(tmp_path: Path, metrics_reader: InMemoryMetricReader) -> None:
    r = metrics_reader
    before = value(r, "counterpoint.approvals.expired")
    bus, agents = _pipeline(_ctx(tmp_path, ApprovalPolicy(ttl=timedelta(seconds=0))))
    await _ticket(bus)
    await bus.tick(agents["approvals"])
    await bus.run_until_idle()
    assert value(r, "counterpoint.approvals.expired") - before == 2


async def test_a_refused_model_call_is_counted_and_costs_nothing(
        metrics_reader: InMemoryMetricReader) -> None:
    r = metrics_reader
    me = {"counterpoint__agent": "metered-broke"}
    provider = metered(OfflineProvider(), PRICED, "metered-broke")
    before = value(r, "counterpoint.budget.refusals", **me)
    request = LLMRequest(task="synthesis.reply", system="s", content="c", output=Composition)
    with metering(0.0), pytest.raises(Exception, match="would cost"):
        await provider.generate(request, model="claude-sonnet-4-5")
    assert value(r, "counterpoint.budget.refusals", **me) - before == 1
    assert value(r, "gen_ai.client.operation.duration", **me) == 0


def test_announce_writes_a_file_sd_target_atomically(tmp_path: Path) -> None:
    path = announce(tmp_path / "metrics", "127.0.0.1:4242", "triage", "host-7")
    assert path is not None and path.name == "triage-host-7.json"
    assert orjson.loads(path.read_bytes()) == [{
        "targets": ["127.0.0.1:4242"],
        "labels": {"service_name": "triage", "service_instance_id": "host-7"}}]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left


SERVE = textwrap.dedent("""
    import sys, urllib.request
    from pathlib import Path
    from opentelemetry import metrics
    from counterpoint.infra.metrics import setup_metrics
    handle = setup_metrics("probe", port=0, targets_dir=Path(sys.argv[1]), instance_id="i-1")
    metrics.get_meter("t").create_counter("probe.things", unit="{thing}").add(3, {"k": "v"})
    print(handle.url)
    print(urllib.request.urlopen(handle.url, timeout=10).read().decode())
    print("TARGET", handle.target_file.exists())
    handle.shutdown()
    print("GONE", not handle.target_file.exists())
""")


def test_a_process_serves_prometheus_text_on_a_free_port_and_announces_it(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", SERVE, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    url, *body = done.stdout.splitlines()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    text = "\n".join(body)
    assert re.search(r'^probe_things_total\{k="v",[^}]*\} 3\.0$', text, re.M), text
    assert "process_cpu_seconds_total" in text  # prometheus_client's process collector
    assert 'service_name="probe"' in text  # the resource, as target_info
    assert "TARGET True" in text and "GONE True" in text


async def test_webhook_attempts_are_counted_by_outcome(
        tmp_path: Path, metrics_reader: InMemoryMetricReader) -> None:
    r = metrics_reader

    def outcomes() -> dict[str, float]:
        return {o: value(r, "counterpoint.webhook.deliveries", counterpoint__agent="webhooks",
                         counterpoint__webhook__outcome=o)
                for o in ("delivered", "webhook-failed", "webhook-rejected")}

    before = outcomes()
    setup = webhook_context(tmp_path, LOOPBACK_ALLOWED)
    with Receiver({"/flaky": [500, 503]}, default=200) as rx:
        await deliver(setup, result(callback_url=rx.url + "/flaky"))
    with Receiver(default=404) as rx:
        await deliver(setup, result(callback_url=rx.url + "/gone"))
    after = outcomes()
    assert {o: after[o] - before[o] for o in after} == {
        "delivered": 1, "webhook-failed": 2, "webhook-rejected": 1}


async def test_the_gateway_serves_metrics_behind_its_token_and_times_requests_by_route(
        metrics_reader: InMemoryMetricReader) -> None:
    r = metrics_reader
    route = {"http__route": "/v1/requests/{request_id}"}
    before = value(r, "http.server.request.duration", **route, http__response__status_code=404)
    refused = value(r, "http.server.request.duration", http__response__status_code=401)
    async with gateway_client(gateway_app(token="s3cret")) as http:
        assert (await http.get("/metrics")).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert (await http.get("/v1/requests/r-1", headers=ok)).status_code == 404
        assert (await http.get("/v1/requests/r-2", headers=ok)).status_code == 404
        scraped = await http.get("/metrics", headers=ok)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=")
    assert "process_cpu_seconds_total" in scraped.text
    # FastAPI's instrumentation: by route template, not one series per request id; the
    # guard's 401 counted too.
    assert value(r, "http.server.request.duration", **route,
                 http__response__status_code=404) - before == 2
    assert value(r, "http.server.request.duration",
                 http__response__status_code=401) - refused == 1
    async with gateway_client(gateway_app(token=None)) as http:
        assert (await http.get("/metrics")).status_code == 200  # no credentials, no token
