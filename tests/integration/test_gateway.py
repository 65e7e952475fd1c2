"""`counterpoint gateway` as a person runs it, in front of real agent processes, over real HTTP."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from counterpoint.infra.broker import free_port
from counterpoint.infra.intake import PROVIDERS
from counterpoint.schemas.envelope import scoped_id
from tests.integration.conftest import AgentStack
from tests.integration.helpers import read_all
from tests.support.provider_webhooks import EXAMPLES, signed
from tests.support.provider_webhooks import example as provider_example
from tests.support.served import Served

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EXE = str(Path(sys.executable).with_name("counterpoint"))
TOKEN = "gateway-test-token"
SECRETS = {"github": "gh-secret", "zendesk": "zd-secret", "pagerduty": "pd-secret"}


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(
        files("counterpoint.infra").joinpath("examples", name).read_bytes())
    return data


class Gateway:
    def __init__(self, bootstrap: str, home: Path, token: str | None,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "COUNTERPOINT_API_TOKEN"}
        env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COUNTERPOINT_HOME": str(home),
                    "COUNTERPOINT_FETCH_MAX_WAIT_MS": "10"})
        if token:
            env["COUNTERPOINT_API_TOKEN"] = token
        env.update(extra_env or {})
        self.log = home / f"gateway-{self.port}.log"
        self.served = Served("gateway", [EXE, "gateway", "--port", str(self.port)], self.log,
                             lambda: bool(httpx.get(self.url + "/healthz",
                                                    timeout=1).json()["broker_readable"]),
                             env)
        self.proc = self.served.proc

    def stop(self) -> None:
        self.served.stop()


@pytest.fixture(scope="module")
def gateway(pipeline: AgentStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(pipeline.bootstrap, tmp_path_factory.mktemp("gw"), None)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def secured(pipeline: AgentStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # Provider webhooks are on here (all but Jira's), to show they need no bearer token.
    gw = Gateway(pipeline.bootstrap, tmp_path_factory.mktemp("gw-auth"), TOKEN,
                 {PROVIDERS[name].setting: secret for name, secret in SECRETS.items()})
    yield gw
    gw.stop()


async def poll(http: httpx.AsyncClient, url: str, timeout_s: float = 90,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while time.monotonic() < deadline:
        r = await http.get(url, headers=headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if body["status"] in ("complete", "partial"):
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"no result within {timeout_s}s; statuses seen: {seen}")


async def test_ticket_over_http_is_answered_with_billing_and_account_findings(
        gateway: Gateway) -> None:
    ticket = dict(example("ticket_dual_intent.json"), id=f"T-gw-{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        r = await http.post("/v1/tickets", json=ticket)
        assert r.status_code == 202, r.text
        receipt = r.json()
        assert receipt["source_id"] == ticket["id"] and receipt["topic"] == "intake.tickets"
        assert r.headers["location"] == receipt["status_url"]
        first = (await http.get(receipt["status_url"])).json()
        assert first["request_id"] == receipt["request_id"]  # known at once, no 404 race
        body = await poll(http, receipt["status_url"])
    assert body["status"] == "complete"
    result = body["result"]
    assert result["kind"] == "reply" and result["source_id"] == ticket["id"]
    skills = {f["skill"] for f in result["findings"]}
    assert {"billing", "account"} <= skills
    steps = body["steps"]
    assert steps[0]["step"] == "triage" and steps[-1]["step"] == "synthesis"
    assert all(s["done"] for s in steps)
    assert {s["skill"] for s in steps if s["step"] == "investigation"} >= {"billing", "account"}


async def test_alertmanager_webhook_over_http_gets_a_runbook(gateway: Gateway) -> None:
    alert = example("alert_alertmanager.json")
    fingerprint = uuid.uuid4().hex[:14]
    alert["alerts"][0]["fingerprint"] = fingerprint
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        r = await http.post("/v1/alerts/alertmanager", json=alert)
        assert r.status_code == 202, r.text
        assert r.json()["source_id"] == fingerprint
        body = await poll(http, r.json()["status_url"])
    assert body["result"]["kind"] == "runbook" and body["status"] == "complete"
    assert "v2.14.0" in body["result"]["text"]


async def test_cloudevents_over_http_are_answered_per_source_and_id(gateway: Gateway) -> None:
    """CloudEvents makes source + id unique: two senders' events with one id are two requests,
    and each status URL serves its own sender's result."""
    event_id = f"ce-{uuid.uuid4()}"
    senders = {"/helpdesk/tests": dict(example("ticket_dual_intent.json"),
                                       id=f"T-ce-{uuid.uuid4().hex[:8]}"),
               "/crm/tests": dict(example("ticket_dual_intent.json"),
                                  id=f"T-ce-{uuid.uuid4().hex[:8]}",
                                  body="I forgot my password and cannot log in")}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        receipts = {}
        for source, ticket in senders.items():
            event = {"specversion": "1.0", "id": event_id, "source": source,
                     "type": "com.example.helpdesk.ticket.created",
                     "time": "2026-11-21T10:00:00Z", "datacontenttype": "application/json",
                     "data": ticket}
            r = await http.post("/v1/events", content=orjson.dumps(event),
                                headers={"content-type": "application/cloudevents+json"})
            assert r.status_code == 202, r.text
            assert r.json()["request_id"] == scoped_id(source, event_id)
            receipts[source] = r.json()
        assert len({r["request_id"] for r in receipts.values()}) == 2
        for source, receipt in receipts.items():
            body = await poll(http, receipt["status_url"])
            assert body["status"] == "complete"
            assert body["result"]["request_id"] == receipt["request_id"]
            assert body["result"]["source_id"] == senders[source]["id"]
            assert body["result"]["origin"] == source


async def test_requests_published_elsewhere_are_found_from_the_topics(
        gateway: Gateway, secured: Gateway) -> None:
    """The second gateway never saw the POST: it learns the request from the topics."""
    ticket = dict(example("ticket_dual_intent.json"), id=f"T-x-{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(gateway.url + "/v1/tickets", json=ticket)
        assert r.status_code == 202
        rid = r.json()["request_id"]
        await poll(http, f"{gateway.url}/v1/requests/{rid}")
        body = await poll(http, f"{secured.url}/v1/requests/{rid}", timeout_s=30,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert body["status"] == "complete"


async def test_bearer_token_is_required_when_configured(secured: Gateway) -> None:
    ticket = dict(example("ticket_dual_intent.json"), id=f"T-auth-{uuid.uuid4().hex[:8]}")
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        r = await http.post("/v1/tickets", json=ticket)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await http.post("/v1/tickets", json=ticket, headers={"Authorization": "Bearer no"})
        assert r.status_code == 401
        r = await http.post("/v1/tickets", json=ticket,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 202, r.text
        doc = (await http.get("/openapi.json")).json()
    assert {"/v1/tickets", "/v1/alerts/alertmanager", "/v1/events",
            "/v1/requests/{request_id}"} <= set(doc["paths"])


async def test_validation_errors_over_http_name_the_fields(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        r = await http.post("/v1/tickets", json={"id": "T-bad"})
        assert r.status_code == 422
        assert r.json()["fields"] == [{"field": "body", "problem": "Field required"}]
        r = await http.get("/v1/requests/never-published")
        assert r.status_code == 404


# --- provider webhooks ---------------------------------------------------------------------


def provider_post(name: str, body: dict[str, Any], delivery: str) -> dict[str, Any]:
    raw = orjson.dumps(body)
    return {"content": raw, "headers": {**signed(name, SECRETS[name], raw, delivery=delivery),
                                        "Content-Type": "application/json"}}


def unique_examples() -> dict[str, dict[str, Any]]:
    """The published examples, with ids of their own so no other test's request is theirs."""
    tag = uuid.uuid4().hex[:8]
    github = orjson.loads(provider_example(EXAMPLES["github"]))
    github["issue"]["number"] = int(tag, 16)
    zendesk = orjson.loads(provider_example(EXAMPLES["zendesk"]))
    zendesk["id"], zendesk["detail"]["id"] = f"zd-event-{tag}", str(int(tag, 16))
    pagerduty = orjson.loads(provider_example(EXAMPLES["pagerduty"]))
    pagerduty["event"]["id"], pagerduty["event"]["data"]["id"] = f"pd-event-{tag}", f"P{tag}"
    return {"github": github, "zendesk": zendesk, "pagerduty": pagerduty}


async def test_signed_provider_webhooks_become_requests_and_a_redelivery_is_the_same_one(
        pipeline: AgentStack, secured: Gateway) -> None:
    bodies = unique_examples()
    receipts = {}
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        for name, body in bodies.items():  # no bearer token: the signature is the credential
            r = await http.post(f"/v1/webhooks/{name}", **provider_post(name, body, f"d-{name}"))
            assert r.status_code == 202, (name, r.text)
            receipts[name] = r.json()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        done = {name: await poll(http, receipt["status_url"], headers=auth)
                for name, receipt in receipts.items()}
        # GitHub redelivers the first delivery (same X-GitHub-Delivery), then a new delivery
        # of the same issue follows on the same partition: once that one has its result, the
        # redelivery has been through triage too.
        again = await http.post("/v1/webhooks/github",
                                **provider_post("github", bodies["github"], "d-github"))
        later = await http.post("/v1/webhooks/github",
                                **provider_post("github", bodies["github"], "d-github-2"))
        assert again.json()["request_id"] == receipts["github"]["request_id"]
        assert later.json()["request_id"] != receipts["github"]["request_id"]
        await poll(http, later.json()["status_url"], headers=auth)
    issue = bodies["github"]["issue"]
    assert done["github"]["result"]["source_id"] == f"Codertocat/Hello-World#{issue['number']}"
    assert done["github"]["result"]["kind"] == "reply"
    assert done["zendesk"]["result"]["source_id"] == f"zendesk:{bodies['zendesk']['detail']['id']}"
    assert done["pagerduty"]["result"]["kind"] == "runbook"
    assert done["pagerduty"]["result"]["source_id"] == bodies["pagerduty"]["event"]["data"]["id"]
    rid = receipts["github"]["request_id"]
    results = [r for r in await read_all(pipeline.bootstrap, "synthesis.results")
               if dict(r.headers).get("ce_requestid") == rid.encode()]
    decisions = [r for r in await read_all(pipeline.bootstrap, "triage.decisions")
                 if dict(r.headers).get("ce_requestid") == rid.encode()]
    assert len(results) == 1 and len(decisions) == 1


async def test_bad_signatures_unknown_events_and_unconfigured_providers_publish_nothing(
        pipeline: AgentStack, secured: Gateway) -> None:
    before = {t: len(await read_all(pipeline.bootstrap, t))
              for t in ("intake.tickets", "intake.alerts")}
    bodies = unique_examples()
    ignored = dict(bodies["pagerduty"], event=dict(bodies["pagerduty"]["event"],
                                                   event_type="incident.resolved"))
    async with httpx.AsyncClient(base_url=secured.url, timeout=10) as http:
        for name, body in bodies.items():
            args = provider_post(name, body, "d-forged")
            args["content"] = args["content"].replace(b"e", b"E", 1)
            r = await http.post(f"/v1/webhooks/{name}", **args)
            assert r.status_code == 401, (name, r.text)
        r = await http.post("/v1/webhooks/pagerduty", **provider_post("pagerduty", ignored, "d"))
        assert r.status_code == 202 and r.json()["ignored"] is True
        jira = provider_example(EXAMPLES["jira"])
        r = await http.post("/v1/webhooks/jira", content=jira,
                            headers=signed("jira", "any", jira))
        assert r.status_code == 503
        assert "COUNTERPOINT_JIRA_WEBHOOK_SECRET is not set" in r.json()["error"]
    after = {t: len(await read_all(pipeline.bootstrap, t)) for t in before}
    assert after == before
    log = secured.log.read_text()
    assert "/v1/webhooks/jira: refused (503): COUNTERPOINT_JIRA_WEBHOOK_SECRET is not set" in log
    assert "/v1/webhooks/github: on" in log
