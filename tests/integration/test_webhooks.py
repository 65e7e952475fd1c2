"""Webhook result delivery with real processes: agents, the webhooks agent and the gateway on
the test broker, and real local HTTP receivers that check the signature.

The receiver is on 127.0.0.1, which deliveries may reach only because this stack's
configuration allows it (COUNTERPOINT_WEBHOOK_NETWORKS); every other inside address stays
refused, and no callback URL here names anything but a loopback address."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.webhook_signing import (
    DELIVERY_HEADER,
    REQUEST_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from tests.integration.conftest import AgentStack
from tests.integration.test_gateway import Gateway, example
from tests.support.webhook_receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXE = str(Path(sys.executable).with_name("counterpoint"))
SECRET = "integration-webhook-secret"
ATTEMPTS = 4
PRIVATE_ANSWER = b"receiver-private-detail: internal token xyz"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver({"/flaky": [500, 502]}, body=PRIVATE_ANSWER) as rx:
        rx.scripts["/down"] = [503] * 100
        rx.scripts["/reject"] = [404] * 100
        yield rx


@pytest.fixture(scope="module")
def stack(bootstrap: str, receiver: Receiver,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    env = {"COUNTERPOINT_WEBHOOK_SECRET": SECRET,
           "COUNTERPOINT_WEBHOOKS": orjson.dumps({"alert": receiver.url + "/alerts"}).decode(),
           "COUNTERPOINT_RETRY_MAX_ATTEMPTS": str(ATTEMPTS),
           "COUNTERPOINT_WEBHOOK_NETWORKS": "127.0.0.1/32"}
    s = AgentStack(bootstrap, tmp_path_factory.mktemp("home"), dict.fromkeys(AGENT_NAMES, 1),
                   extra_env=env)
    try:
        s.wait_joined()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def gateway(stack: AgentStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(stack.bootstrap, tmp_path_factory.mktemp("gw"), None)
    yield gw
    gw.stop()


async def delivery_state(http: httpx.AsyncClient, status_url: str,
                         timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = (await http.get(status_url)).json()
        if body.get("delivery"):
            return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"no delivery recorded within {timeout_s}s: {body}")


async def post_ticket(http: httpx.AsyncClient, callback: str,
                      path: str = "/v1/tickets") -> dict[str, Any]:
    ticket = dict(example("ticket_dual_intent.json"), id=f"T-wh-{uuid.uuid4().hex[:8]}",
                  callback_url=callback)
    r = await http.post(path, json=ticket)
    assert r.status_code == 202, r.text
    receipt: dict[str, Any] = r.json()
    return receipt


def check_signed(received: Any) -> dict[str, Any]:
    h = received.headers
    assert verify(SECRET, h[TIMESTAMP_HEADER], received.body, h[SIGNATURE_HEADER])
    body: dict[str, Any] = orjson.loads(received.body)
    assert h[REQUEST_HEADER] == body["request_id"]
    return body


async def test_result_is_posted_signed_to_the_requests_callback(
        gateway: Gateway, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        receipt = await post_ticket(http, receiver.url + "/ok")
        record = await delivery_state(http, receipt["status_url"])
    (got,) = receiver.received["/ok"]
    body = check_signed(got)
    assert body["request_id"] == receipt["request_id"] and body["kind"] == "reply"
    delivery = record["delivery"]
    assert delivery["state"] == "delivered" and delivery["attempts"] == 1
    assert delivery["result_id"] == got.headers[DELIVERY_HEADER]
    assert delivery["url"] == receiver.url + "/ok"


async def test_a_receiver_failing_twice_gets_it_on_the_third_attempt(
        gateway: Gateway, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        receipt = await post_ticket(http, receiver.url + "/flaky")
        record = await delivery_state(http, receipt["status_url"])
    got = receiver.received["/flaky"]
    assert len(got) == 3
    assert len({g.headers[DELIVERY_HEADER] for g in got}) == 1  # one delivery, tried thrice
    check_signed(got[-1])
    assert record["delivery"]["state"] == "delivered" and record["delivery"]["attempts"] == 3


async def test_a_receiver_that_always_fails_shows_as_failed(
        gateway: Gateway, receiver: Receiver, stack: AgentStack) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        receipt = await post_ticket(http, receiver.url + "/down")
        record = await delivery_state(http, receipt["status_url"])
    assert receiver.count("/down") == ATTEMPTS
    delivery = record["delivery"]
    assert delivery["state"] == "failed" and delivery["attempts"] == ATTEMPTS
    assert delivery["reason"] == "webhook-failed" and "HTTP 503" in delivery["error"]
    assert record["status"] == "complete"  # the result itself is fine; only delivery failed
    # `counterpoint status` counts it too.
    done = subprocess.run([EXE, "status", "--json"], env=stack.env, capture_output=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert orjson.loads(done.stdout)["webhook_deliveries_failed"] >= 1


async def test_alerts_go_to_the_url_configured_for_their_kind(
        gateway: Gateway, receiver: Receiver) -> None:
    alert = example("alert_alertmanager.json")
    alert["alerts"][0]["fingerprint"] = uuid.uuid4().hex[:16]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        r = await http.post("/v1/alerts/alertmanager", json=alert)
        assert r.status_code == 202, r.text
        record = await delivery_state(http, r.json()["status_url"])
    assert record["delivery"]["state"] == "delivered"
    bodies = [check_signed(g) for g in receiver.received["/alerts"]]
    assert r.json()["request_id"] in {b["request_id"] for b in bodies}


async def test_a_callback_to_an_address_not_allowed_is_refused_without_a_connection(
        gateway: Gateway, receiver: Receiver) -> None:
    """`0` is 0.0.0.0, which Linux connects to this host: the receiver would get it."""
    port = receiver.server.server_address[1]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        receipt = await post_ticket(http, f"http://0:{port}/zero")
        record = await delivery_state(http, receipt["status_url"])
    assert receiver.count("/zero") == 0
    delivery = record["delivery"]
    assert delivery["state"] == "failed" and delivery["reason"] == "webhook-refused"
    assert delivery["attempts"] == 1
    assert "0 resolves to 0.0.0.0, which is unspecified" in delivery["error"]


async def test_what_a_receiver_answers_never_comes_back(
        gateway: Gateway, receiver: Receiver) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        receipt = await post_ticket(http, receiver.url + "/reject")
        record = await delivery_state(http, receipt["status_url"])
    assert receiver.count("/reject") == 1
    delivery = record["delivery"]
    assert delivery["reason"] == "webhook-rejected"
    assert "HTTP 404 Not Found" in delivery["error"]
    assert "receiver-private-detail" not in str(record) and "xyz" not in delivery["error"]


async def test_url_secrets_reach_no_log_and_no_span(
        gateway: Gateway, receiver: Receiver, stack: AgentStack) -> None:
    callback = receiver.url.replace("http://", "http://hook-user:hook-pw-123@") + \
        "/secret?token=q-secret-456"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        receipt = await post_ticket(http, callback, path="/v1/tickets?auth=gw-secret-789")
        record = await delivery_state(http, receipt["status_url"])
    assert record["delivery"]["state"] == "delivered"
    assert record["delivery"]["url"] == receiver.url + "/secret"
    assert receiver.count("/secret?token=q-secret-456") == 1
    await asyncio.sleep(1.0)  # the span exporters' batch delay
    texts = {"gateway log": gateway.log.read_text(errors="replace")}
    texts.update({str(p): p.read_text(errors="replace")
                  for folder in ("logs", "traces") for p in (stack.home / folder).iterdir()})
    assert "auth=[secret]" in texts["gateway log"]  # uvicorn's access line, redacted
    assert any("POST " + receiver.url + "/secret" in t for t in texts.values())
    for where, text in texts.items():
        for secret in ("hook-pw-123", "q-secret-456", "gw-secret-789"):
            assert secret not in text, f"{secret} in {where}"
