"""A real Prometheus Alertmanager posting to the gateway, in front of real agent processes.

Debian's `prometheus-alertmanager` is installed when missing (apt, as root); without root or
apt the test is skipped, saying so. The alert goes in through Alertmanager's own API; what the
gateway receives is exactly what Alertmanager's webhook receiver sends. The request id is
derived from the alert's fingerprint and startsAt, read back from Alertmanager's API.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from counterpoint.infra.broker import free_port
from counterpoint.schemas.events import AlertmanagerAlert
from counterpoint.schemas.identity import alert_request_id
from tests.integration.conftest import AgentStack
from tests.integration.test_gateway import Gateway, example
from tests.support.debian import debian_binary
from tests.support.served import Served

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def alertmanager_binary() -> str:
    """The Alertmanager executable, installing Debian's package when it is missing."""
    return debian_binary("prometheus-alertmanager", ("prometheus-alertmanager", "alertmanager"))


CONFIG = """\
global:
  # Long on purpose: the test resolves the alert itself (endsAt in the past); an alert that
  # timed out first would prove nothing about that.
  resolve_timeout: 5m
route:
  receiver: counterpoint
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: counterpoint
    webhook_configs:
      - url: {url}/v1/alerts/alertmanager
        send_resolved: true
"""


class Alertmanager:
    def __init__(self, binary: str, home: Path, gateway_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = home / "alertmanager.yml"
        config.write_text(CONFIG.format(url=gateway_url))
        (home / "data").mkdir()
        self.log = home / "alertmanager.log"
        self.served = Served(
            "alertmanager",
            [binary, f"--config.file={config}", f"--storage.path={home / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             "--log.level=debug"], self.log,
            lambda: httpx.get(self.url + "/-/ready", timeout=1).status_code == 200)
        self.proc = self.served.proc

    def stop(self) -> None:
        self.served.stop()


@pytest.fixture(scope="module")
def gateway(pipeline: AgentStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(pipeline.bootstrap, tmp_path_factory.mktemp("gw"), None)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def alertmanager(gateway: Gateway,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    am = Alertmanager(alertmanager_binary(), tmp_path_factory.mktemp("am"), gateway.url)
    yield am
    am.stop()


def _ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def poll_until(http: httpx.AsyncClient, url: str, statuses: set[str],
                     timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        r = await http.get(url)
        if r.status_code == 200:
            body: dict[str, Any] = r.json()
            if not seen or seen[-1] != body["status"]:
                seen.append(body["status"])
            if body["status"] in statuses:
                return body
        else:
            assert r.status_code == 404, r.text  # not seen yet: Alertmanager has not sent it
            if not seen or seen[-1] != "404":
                seen.append("404")
        await asyncio.sleep(0.5)
    raise AssertionError(f"request never became {statuses} within {timeout_s}s; seen: {seen}")


async def test_alert_through_alertmanager_gets_a_runbook_then_closes_when_resolved(
        alertmanager: Alertmanager, gateway: Gateway) -> None:
    name = f"CheckoutErrors{uuid.uuid4().hex[:8]}"
    started = datetime.now(UTC) - timedelta(seconds=5)
    alert = {"labels": {"alertname": name, "service": "checkout-api", "severity": "critical"},
             "annotations": {"summary": "checkout-api 5xx error ratio above 5%",
                             "description": "checkout-api answers 14% of requests with 5xx"},
             "startsAt": _ms(started), "generatorURL": "http://prometheus.test/graph"}
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(alertmanager.url + "/api/v2/alerts", json=[alert])
        assert r.status_code == 200, r.text
        listed = (await http.get(alertmanager.url + "/api/v2/alerts",
                                 params={"filter": f'alertname="{name}"'})).json()
        (held,) = listed
        fingerprint = held["fingerprint"]
        rid = alert_request_id(AlertmanagerAlert.model_validate(
            {"labels": held["labels"], "fingerprint": fingerprint,
             "startsAt": held["startsAt"]}))
        url = f"{gateway.url}/v1/requests/{rid}"

        body = await poll_until(http, url, {"complete", "partial"})
        result = body["result"]
        assert result["kind"] == "runbook" and result["source_id"] == fingerprint
        assert result["resolution"] is None and body["resolution"] is None
        assert name in result["title"]
        assert {f["skill"] for f in result["findings"]} >= {"infrastructure", "knowledge"}

        # The same alert again, ended a second ago: Alertmanager sends it resolved.
        ended = dict(alert, endsAt=_ms(datetime.now(UTC) - timedelta(seconds=1)))
        r = await http.post(alertmanager.url + "/api/v2/alerts", json=[ended])
        assert r.status_code == 200, r.text
        closed = await poll_until(http, url, {"resolved"})

    assert closed["resolution"]["state"] == "resolved"
    assert closed["resolution"]["resolved_at"] is not None
    assert closed["result"]["findings"] == result["findings"]  # the runbook stays the record
    steps = closed["steps"]
    assert steps[-1]["step"] == "resolution" and steps[-1]["done"]
    assert "Resolved" not in result["text"]
    # Alertmanager really sent both notifications to the gateway, not just one.
    log = alertmanager.log.read_text()
    assert "Notify success" in log or "notify success" in log.lower(), log[-3000:]


async def test_firing_via_the_gateway_and_resolved_from_a_raw_kafka_client_meet(
        gateway: Gateway, pipeline: AgentStack) -> None:
    """Two ways in, no shared state: the firing body through the gateway, the resolved one
    straight onto intake.alerts from confluent-kafka (no envelope) right after, typically
    while the first is still being investigated. The request ends resolved either way."""
    from confluent_kafka import Producer

    from counterpoint.topics.registry import INTAKE_ALERTS

    firing = example("alert_alertmanager.json")
    fingerprint = uuid.uuid4().hex[:16]
    firing["alerts"][0]["fingerprint"] = fingerprint
    resolved = orjson.loads(orjson.dumps(firing))
    resolved["status"] = "resolved"
    resolved["alerts"][0].update(status="resolved", endsAt=_ms(datetime.now(UTC)))
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        r = await http.post("/v1/alerts/alertmanager", json=firing)
        assert r.status_code == 202, r.text
        receipt = r.json()
        producer = Producer({"bootstrap.servers": pipeline.bootstrap})
        producer.produce(INTAKE_ALERTS.name, key=fingerprint, value=orjson.dumps(resolved))
        assert producer.flush(15) == 0
        closed = await poll_until(http, receipt["status_url"], {"resolved"})
    assert closed["request_id"] == receipt["request_id"]
    assert closed["resolution"]["during"] in ("investigation", "after")
    assert closed["result"]["kind"] == "runbook" and closed["result"]["source_id"] == fingerprint
