"""The gateway's provider routes through its ASGI app, with the producer replaced by a recorder
(the real broker runs in tests/integration/test_provider_webhooks.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from counterpoint.bus.decode import InputLimits
from counterpoint.infra import gateway_state
from counterpoint.infra.gateway import create_app
from counterpoint.infra.intake import PROVIDERS
from counterpoint.schemas.envelope import derive_event_id, scoped_id
from tests.support.provider_webhooks import EXAMPLES, example, signed
from tests.unit.test_gateway import DEAD, client, fields

SECRETS = {name: f"{name}-secret" for name in PROVIDERS}
Sent = list[tuple[str, bytes, dict[str, bytes]]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sent]:
    records: Sent = []

    async def record(_self: Any, topic: str, value: bytes, *, key: bytes | None,
                     headers: Sequence[tuple[str, bytes]]) -> tuple[int, int]:
        records.append((topic, value, dict(headers)))
        return 0, len(records) - 1

    monkeypatch.setattr(gateway_state.Publisher, "send", record)
    yield records


def app(secrets: dict[str, str] | None = None, **kw: Any) -> FastAPI:
    keys = {k: v.encode() for k, v in (SECRETS if secrets is None else secrets).items()}
    return create_app(DEAD, track=False, webhook_secrets=keys, **kw)


def post_args(name: str, raw: bytes | None = None, delivery: str = "delivery-1",
              **over: str) -> dict[str, Any]:
    raw = example(EXAMPLES[name]) if raw is None else raw
    headers = {**signed(name, SECRETS[name], raw, delivery=delivery),
               "Content-Type": "application/json", **over}
    return {"content": raw, "headers": headers}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
async def test_a_signed_published_example_is_published_as_a_ticket_or_alert(
        name: str, sent: Sent) -> None:
    async with client(app()) as http:
        r = await http.post(f"/v1/webhooks/{name}", **post_args(name))
    assert r.status_code == 202, r.text
    receipt = r.json()
    kind = PROVIDERS[name].kind
    [(topic, value, headers)] = sent
    assert topic == f"intake.{kind}s"
    assert headers["ce_source"] == f"/counterpoint/gateway/webhooks/{name}".encode()
    assert receipt["status_url"].endswith(receipt["request_id"])
    body = orjson.loads(value)
    if name != "grafana":  # Grafana's request id is its alert's, as for Alertmanager
        assert receipt["source_id"] == body["id"]


async def test_the_delivery_id_is_the_request_so_a_redelivery_is_the_same_request(
        sent: Sent) -> None:
    async with client(app()) as http:
        first = await http.post("/v1/webhooks/github", **post_args("github", delivery="d-1"))
        again = await http.post("/v1/webhooks/github", **post_args("github", delivery="d-1"))
        other = await http.post("/v1/webhooks/github", **post_args("github", delivery="d-2"))
    # The event id comes from the delivery id; the request from it and the source (CloudEvents'
    # identity is source + id).
    assert first.json()["request_id"] == again.json()["request_id"] == scoped_id(
        "/counterpoint/gateway/webhooks/github", derive_event_id("webhook", "github", "d-1"))
    assert other.json()["request_id"] != first.json()["request_id"]
    assert sent[0][2]["ce_id"] == sent[1][2]["ce_id"] != sent[2][2]["ce_id"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
async def test_a_bad_signature_is_401_naming_the_header_and_publishes_nothing(
        name: str, sent: Sent) -> None:
    header = PROVIDERS[name].signature_header
    async with client(app()) as http:
        args = post_args(name)
        args["content"] = args["content"].replace(b"e", b"E", 1)
        r = await http.post(f"/v1/webhooks/{name}", **args)
        assert r.status_code == 401, r.text
        assert "does not match" in fields(r)[header]
        # Checked before parsing: a body that is not even JSON is refused for its signature.
        args = post_args(name)
        args["content"] = b"{not json"
        assert (await http.post(f"/v1/webhooks/{name}", **args)).status_code == 401
        args["headers"] = {k: v for k, v in args["headers"].items() if k != header}
        r = await http.post(f"/v1/webhooks/{name}", **args)
        assert r.status_code == 401 and fields(r)[header] == "missing"
    assert sent == []


async def test_an_unknown_event_type_is_202_ignored_and_says_why(sent: Sent) -> None:
    body = orjson.loads(example(EXAMPLES["pagerduty"]))
    body["event"]["event_type"] = "incident.acknowledged"
    raw = orjson.dumps(body)
    async with client(app()) as http:
        r = await http.post("/v1/webhooks/pagerduty", **post_args("pagerduty", raw))
        ping = await http.post("/v1/webhooks/github", **post_args(
            "github", b'{"zen": "Keep it logically awesome.", "hook_id": 7}',
            **{"X-GitHub-Event": "ping"}))
    assert r.status_code == 202
    assert r.json() == {"ignored": True, "provider": "pagerduty",
                        "event_type": "incident.acknowledged",
                        "reason": "only `incident.triggered` starts a request"}
    assert ping.status_code == 202 and ping.json()["event_type"] == "ping"
    assert sent == []


async def test_a_provider_without_a_secret_is_refused_and_the_setting_named(sent: Sent) -> None:
    async with client(app({"github": SECRETS["github"]})) as http:
        r = await http.post("/v1/webhooks/zendesk", **post_args("zendesk"))
        assert r.status_code == 503
        assert "COUNTERPOINT_ZENDESK_WEBHOOK_SECRET is not set" in r.json()["error"]
        assert fields(r) == {"COUNTERPOINT_ZENDESK_WEBHOOK_SECRET": "not set"}
        assert (await http.post("/v1/webhooks/github", **post_args("github"))).status_code == 202
    assert len(sent) == 1


async def test_the_secret_is_refused_before_the_body_is_read(sent: Sent) -> None:
    read = []

    async def body() -> AsyncIterator[bytes]:
        read.append(True)
        yield example(EXAMPLES["github"])

    async with client(app({})) as http:
        r = await http.post("/v1/webhooks/github", content=body(),
                            headers=signed("github", "x", b""))
        assert r.status_code == 503
        r = await http.post("/v1/webhooks/nosuch", content=b"{}")
        assert r.status_code == 404
    async with client(app()) as http:
        r = await http.post("/v1/webhooks/github", content=body())  # no signature header
        assert r.status_code == 401
    assert read == [] and sent == []


async def test_a_body_over_the_limit_is_413_with_or_without_content_length(sent: Sent) -> None:
    raw = example(EXAMPLES["github"])  # 13 kB

    async def chunked() -> AsyncIterator[bytes]:
        for i in range(0, len(raw), 1000):
            yield raw[i:i + 1000]

    async with client(app(limits=InputLimits(max_bytes=4096))) as http:
        r = await http.post("/v1/webhooks/github", **post_args("github"))
        assert r.status_code == 413 and "over 4,096 bytes" in r.json()["error"]
        headers = signed("github", SECRETS["github"], raw)
        r = await http.post("/v1/webhooks/github", content=chunked(), headers=headers)
        assert r.status_code == 413
    assert sent == []


async def test_a_genuine_delivery_the_mapping_cannot_use_is_422_naming_the_field(
        sent: Sent) -> None:
    body = orjson.loads(example(EXAMPLES["jira"]))
    del body["issue"]["fields"]["summary"]
    async with client(app()) as http:
        r = await http.post("/v1/webhooks/jira", **post_args("jira", orjson.dumps(body)))
        assert r.status_code == 422 and fields(r) == {"issue.fields.summary": "missing or empty"}
        huge = orjson.loads(example(EXAMPLES["github"]))
        huge["issue"]["body"] = "x" * 100_001
        r = await http.post("/v1/webhooks/github", **post_args("github", orjson.dumps(huge)))
        assert r.status_code == 422 and "ticket.body" in fields(r)
    assert sent == []


async def test_provider_routes_take_the_signature_not_the_bearer_token(sent: Sent) -> None:
    async with client(app(token="s3cret")) as http:
        r = await http.post("/v1/webhooks/github", **post_args("github"))
        assert r.status_code == 202, r.text
        args = post_args("github")
        args["headers"] = {"Authorization": "Bearer s3cret", "X-GitHub-Event": "issues",
                           "X-GitHub-Delivery": "d"}
        assert (await http.post("/v1/webhooks/github", **args)).status_code == 401
        assert (await http.post("/v1/tickets", json={})).status_code == 401  # unchanged


async def test_openapi_documents_each_provider_route() -> None:
    async with client(app()) as http:
        doc = (await http.get("/openapi.json")).json()
    for name, provider in PROVIDERS.items():
        op = doc["paths"][f"/v1/webhooks/{name}"]["post"]
        assert provider.setting in op["description"] and "401" in op["responses"]


async def test_a_grafana_notification_over_the_alert_cap_is_413(sent: Sent) -> None:
    body = orjson.loads(example(EXAMPLES["grafana"]))
    body["alerts"] = [body["alerts"][0]] * 2
    async with client(app(max_alerts=1)) as http:
        r = await http.post("/v1/webhooks/grafana", **post_args("grafana", orjson.dumps(body)))
    assert r.status_code == 413, r.text
    assert "COUNTERPOINT_MAX_ALERTS" in r.json()["error"] and "alert.alerts" in fields(r)
    assert sent == []
