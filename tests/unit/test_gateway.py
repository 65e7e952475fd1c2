"""The HTTP gateway driven through its ASGI app: validation, auth, 503, the progress index."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from counterpoint.bus.decode import InputLimits, RawRecord
from counterpoint.bus.kafka import KafkaConfig
from counterpoint.infra.gateway import create_app
from counterpoint.infra.gateway_state import RequestIndex, status_of, steps_of
from counterpoint.schemas.envelope import Envelope, now
from counterpoint.topics.registry import TRIAGE_DECISIONS


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DEAD = KafkaConfig(bootstrap_servers=f"127.0.0.1:{_closed_port()}")


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(
        files("counterpoint.infra").joinpath("examples", name).read_bytes())
    return data


TICKET = example("ticket_dual_intent.json")
ALERT = example("alert_alertmanager.json")


def cloudevent(**over: Any) -> dict[str, Any]:
    event = {"specversion": "1.0", "id": "ev-1", "source": "/helpdesk",
             "type": "com.example.helpdesk.ticket", "data": TICKET}
    event.update(over)
    return {k: v for k, v in event.items() if v is not None}


@asynccontextmanager
async def client(app: FastAPI, lifespan: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        if lifespan:
            async with app.router.lifespan_context(app):
                yield http
        else:
            yield http


def app(**kw: Any) -> FastAPI:
    return create_app(DEAD, track=False, publish_timeout_s=3.0, **kw)


def fields(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error", "fields"} and body["error"]
    return {f["field"]: f["problem"] for f in body["fields"]}


# --- validation: nothing reaches the broker, so none is needed --------------------------------


@pytest.mark.parametrize("path", ["/v1/tickets", "/v1/alerts/alertmanager", "/v1/events"])
async def test_not_json_is_400_naming_the_body(path: str) -> None:
    async with client(app()) as http:
        for raw in (b"{not json", b"", b"\xff\xfe{}"):
            r = await http.post(path, content=raw)
            assert r.status_code == 400, (raw, r.text)
            assert "(value)" in fields(r)


@pytest.mark.parametrize("path", ["/v1/tickets", "/v1/alerts/alertmanager", "/v1/events"])
async def test_a_json_value_that_is_not_an_object_is_422(path: str) -> None:
    async with client(app()) as http:
        for raw in (b"[1, 2]", b'"text"', b"3", b"null"):
            r = await http.post(path, content=raw)
            assert r.status_code == 422
            assert "expected a JSON object" in fields(r)["(value)"]


async def test_too_large_and_too_deep_bodies_are_refused() -> None:
    async with client(app(limits=InputLimits(max_bytes=2048, max_depth=4))) as http:
        big = dict(TICKET, body="x" * 4000)
        assert (await http.post("/v1/tickets", json=big)).status_code == 413
        deep = dict(TICKET, extra={"a": {"b": {"c": {"d": {}}}}})
        r = await http.post("/v1/tickets", json=deep)
        assert r.status_code == 422 and "deep" in fields(r)["(value)"]


async def test_ticket_names_every_bad_field() -> None:
    async with client(app()) as http:
        r = await http.post("/v1/tickets", json={"customer_id": 7})
        assert r.status_code == 422
        got = fields(r)
        assert got["id"] == "Field required" and got["body"] == "Field required"
        assert "customer_id" in got and "string" in got["customer_id"]
        r = await http.post("/v1/tickets", json={"id": "", "body": 5})
        assert set(fields(r)) == {"id", "body"}


async def test_alertmanager_names_every_bad_field() -> None:
    async with client(app()) as http:
        r = await http.post("/v1/alerts/alertmanager", json=dict(ALERT, alerts=[]))
        assert r.status_code == 422 and "alerts" in fields(r)
        no_version = {k: v for k, v in ALERT.items() if k != "version"}
        r = await http.post("/v1/alerts/alertmanager", json=no_version)
        assert r.status_code == 422 and '"4"' in fields(r)["version"]
        broken = dict(ALERT, status="sleeping", alerts=[{"status": "firing", "labels": "x"}])
        del broken["groupKey"]
        got = fields(await http.post("/v1/alerts/alertmanager", json=broken))
        assert {"status", "groupKey", "alerts.0.labels"} <= set(got)
        # A simple alert is an alert, but not what Alertmanager sends.
        simple = {"id": "A-1", "service": "api", "summary": "down"}
        r = await http.post("/v1/alerts/alertmanager", json=simple)
        assert r.status_code == 422 and {"version", "groupKey", "alerts"} <= set(fields(r))


async def test_cloudevent_attributes_are_checked() -> None:
    async with client(app()) as http:
        r = await http.post("/v1/events", json={"data": TICKET})
        assert r.status_code == 422
        assert {"specversion", "id", "source", "type"} <= set(fields(r))
        r = await http.post("/v1/events", json=cloudevent(specversion="0.3", id=""))
        assert {"specversion", "id"} <= set(fields(r))
        r = await http.post("/v1/events", json=cloudevent(data=None))
        assert r.status_code == 422 and "data" in fields(r)
        no_data = cloudevent()
        del no_data["data"]
        assert "data" in fields(await http.post("/v1/events", json=no_data))
        r = await http.post("/v1/events", json=cloudevent(datacontenttype="text/plain"))
        assert "datacontenttype" in fields(r)
        r = await http.post("/v1/events", json=cloudevent(data_base64="aGk="))
        assert "data_base64" in fields(r)
        r = await http.post("/v1/events", json=cloudevent(type="com.example.thing"))
        assert "type" in fields(r)
        r = await http.post("/v1/events", json=cloudevent(counterpointkind="invoice"))
        assert "counterpointkind" in fields(r)
        r = await http.post("/v1/events", content=b"[]",
                            headers={"content-type": "application/cloudevents-batch+json"})
        assert r.status_code == 415 and "Content-Type" in fields(r)


async def test_cloudevent_data_is_validated_as_the_kind_its_type_names() -> None:
    async with client(app()) as http:
        r = await http.post("/v1/events", json=cloudevent(data={"id": "T-1"}))
        assert r.status_code == 422 and fields(r) == {"data.body": "Field required"}
        r = await http.post("/v1/events", json=cloudevent(type="io.prometheus.alert",
                                                          data=dict(ALERT, alerts=[])))
        assert r.status_code == 422 and "data.alerts" in fields(r)
        r = await http.post("/v1/events", json=cloudevent(counterpointkind="alert",
                                                          data={"id": "A-1"}))
        assert {"data.service", "data.summary"} <= set(fields(r))
        r = await http.post("/v1/events", json=cloudevent(data=[1]))
        assert r.status_code == 422 and "data" in fields(r)


async def test_more_alerts_than_the_cap_is_413_naming_the_cap() -> None:
    body = dict(ALERT, alerts=[ALERT["alerts"][0]] * 4)
    event = cloudevent(type="io.prometheus.alert.firing", data=body)
    async with client(app(max_alerts=3)) as http:
        for path, sent, field in (("/v1/alerts/alertmanager", body, "alerts"),
                                  ("/v1/events", event, "data.alerts")):
            r = await http.post(path, json=sent)
            assert r.status_code == 413, r.text
            assert "4 alerts; the limit is 3 (COUNTERPOINT_MAX_ALERTS" in r.json()["error"]
            assert field in fields(r)
        # At the cap it passes validation (and fails later: this test has no broker).
        r = await http.post("/v1/alerts/alertmanager", json=dict(ALERT, alerts=body["alerts"][:3]))
        assert r.status_code == 503


async def test_unknown_request_is_404() -> None:
    async with client(app()) as http:
        r = await http.get("/v1/requests/nope")
        assert r.status_code == 404 and "request_id" in fields(r)


# --- auth -------------------------------------------------------------------------------------


async def test_auth_on_needs_the_right_bearer_token() -> None:
    async with client(app(token="s3cret")) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"},
                        {"Authorization": "s3cret"}):
            for method, path in (("POST", "/v1/tickets"), ("POST", "/v1/alerts/alertmanager"),
                                 ("POST", "/v1/events"), ("GET", "/v1/requests/x")):
                r = await http.request(method, path, json=TICKET, headers=headers)
                assert r.status_code == 401, (headers, path, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert "Authorization" in fields(r)
        ok = {"Authorization": "Bearer s3cret"}
        # Past auth: validation (no broker needed) and the open endpoints.
        assert (await http.post("/v1/tickets", json={}, headers=ok)).status_code == 422
        assert (await http.get("/v1/requests/x", headers=ok)).status_code == 404
        assert (await http.get("/openapi.json")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


async def test_auth_off_needs_no_header() -> None:
    async with client(app(token=None)) as http:
        assert (await http.post("/v1/tickets", json={})).status_code == 422
        assert (await http.get("/v1/requests/x")).status_code == 404
    async with client(app(token="")) as http:  # empty = unset
        assert (await http.get("/v1/requests/x")).status_code == 404


# --- broker down -------------------------------------------------------------------------------


async def test_an_unreachable_broker_gives_503_quickly() -> None:
    gateway = create_app(DEAD, publish_timeout_s=3.0)  # with the progress reader, as run
    async with client(gateway, lifespan=True) as http:
        for path, body in (("/v1/tickets", TICKET), ("/v1/alerts/alertmanager", ALERT),
                           ("/v1/events", cloudevent())):
            started = time.monotonic()
            r = await http.post(path, json=body)
            assert r.status_code == 503, r.text
            assert time.monotonic() - started < 5
            assert "not published" in r.json()["error"]
        # Unknown while the broker cannot be read: not "no such request" but "retry later".
        assert (await http.get("/v1/requests/x")).status_code == 503
        assert (await http.get("/healthz")).json()["broker_readable"] is False


# --- openapi and the progress index ------------------------------------------------------------


async def test_openapi_lists_the_endpoints_and_body_schemas() -> None:
    async with client(app(token="t")) as http:
        doc = (await http.get("/openapi.json")).json()
    assert {"/v1/tickets", "/v1/alerts/alertmanager", "/v1/events",
            "/v1/requests/{request_id}"} <= set(doc["paths"])
    assert {"Ticket", "AlertmanagerWebhook", "CloudEvent", "Accepted", "ErrorBody",
            "RequestStatus"} <= set(doc["components"]["schemas"])
    body = doc["paths"]["/v1/tickets"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Ticket"}


def test_index_follows_a_request_through_its_steps() -> None:
    from counterpoint.schemas.events import Generation, Subject, TriageDecision, Usage

    index = RequestIndex(max_tracked=2)
    index.accepted("r1", "T-1")
    progress = index.get("r1")
    assert progress is not None and status_of(progress) == "accepted"
    decision = TriageDecision(
        request_id="r1", subject=Subject(kind="ticket", source_id="T-1", title="t", text="x"),
        category="billing", intents=["billing"], priority="high", investigations=[],
        deadline_at=now(), rationale="r", generation=Generation(provider="offline", model="m",
                                                                offline=True), usage=Usage())
    env = Envelope(id="d1", source="/t", type=TRIAGE_DECISIONS.ce_type, time=now(),
                   request_id="r1", subject="T-1")
    index.apply(RawRecord(TRIAGE_DECISIONS.name, 0, 0, None,
                          orjson.dumps(decision.model_dump(mode="json")),
                          tuple(env.to_headers()), 0))
    assert status_of(progress) == "triaged"
    assert [s["step"] for s in steps_of(progress)] == ["triage", "synthesis"]
    assert steps_of(progress)[0]["done"] is True
    index.apply(RawRecord(TRIAGE_DECISIONS.name, 0, 1, None, b"{bad", (), 0))  # ignored
    index.accepted("r2", "T-2")
    index.accepted("r3", "T-3")
    assert index.get("r1") is None and len(index) == 2


def test_index_shows_a_resolved_request_and_its_webhook_delivery() -> None:
    from counterpoint.schemas.events import (
        Generation,
        Resolution,
        Result,
        Usage,
        WebhookDelivery,
    )
    from counterpoint.topics.registry import (
        DEADLETTER_NAME,
        SYNTHESIS_RESULTS,
        WEBHOOK_DELIVERIES,
    )

    def result(rid: str, findings: bool, resolution: Resolution | None) -> Result:
        from counterpoint.schemas.events import FindingRef

        refs = [FindingRef(task_id="t", skill="knowledge", focus="runbooks", agent="knowledge",
                           summary="s", facts=[])] if findings else []
        return Result(request_id=rid, source_id="fp", kind="runbook", title="t", text="x",
                      priority="high", status="complete", findings=refs,
                      generation=Generation(provider="offline", model="m", offline=True),
                      usage=Usage(), completed_at=now(), resolution=resolution)

    def record(topic: str, offset: int, event_id: str, value: bytes,
               extra: tuple[tuple[str, bytes], ...] = ()) -> RawRecord:
        env = Envelope(id=event_id, source="/t", type="x", time=now(), request_id="r1")
        return RawRecord(topic, 0, offset, None, value, (*env.to_headers(), *extra), offset)

    index = RequestIndex()
    index.accepted("r1", "fp")
    runbook = result("r1", True, None)
    index.apply(record(SYNTHESIS_RESULTS.name, 0, "res-1",
                       orjson.dumps(runbook.model_dump(mode="json"))))
    progress = index.get("r1")
    assert progress is not None and status_of(progress) == "complete"
    closing = result("r1", False, Resolution(resolved_at=now(), during="after"))
    index.apply(record(SYNTHESIS_RESULTS.name, 1, "res-2",
                       orjson.dumps(closing.model_dump(mode="json"))))
    assert status_of(progress) == "resolved"
    assert progress.result == runbook  # the closing result does not replace the runbook
    assert steps_of(progress)[-1]["step"] == "resolution"

    failed = record(DEADLETTER_NAME, 2, "res-1", orjson.dumps(runbook.model_dump(mode="json")),
                    (("dlq.agent", b"webhooks"), ("dlq.reason", b"webhook-failed"),
                     ("dlq.attempts", b"5"), ("dlq.error.message", b"POST x: HTTP 500")))
    index.apply(failed)
    assert progress.delivery is not None and progress.delivery.state == "failed"
    assert (progress.delivery.attempts, progress.delivery.error) == (5, "POST x: HTTP 500")
    delivered = WebhookDelivery(request_id="r1", result_id="res-1", url="http://h/p",
                                attempts=6, status_code=204, delivered_at=now())
    index.apply(record(WEBHOOK_DELIVERIES.name, 3, "d-1",
                       orjson.dumps(delivered.model_dump(mode="json"))))
    assert progress.delivery.state == "delivered" and progress.delivery.attempts == 6
    # Another agent's dead letter says nothing about deliveries.
    index.apply(record(DEADLETTER_NAME, 4, "x", b"{}", (("dlq.agent", b"synthesis"),)))
    assert progress.delivery.state == "delivered"
