"""Webhook result delivery: signing, where a result goes, and the agent against a real local
HTTP receiver on the in-memory bus (retries, giving up, refusing)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.webhook_signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)
from counterpoint.agents.webhooks import build, shown, target_for
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.delivery import RetryPolicy
from counterpoint.bus.memory import MemoryBus
from counterpoint.infra.webhook_status import delivery_of
from counterpoint.schemas.envelope import Envelope
from counterpoint.schemas.events import Generation, Result, Usage
from counterpoint.topics.registry import DEADLETTER_NAME, SYNTHESIS_RESULTS, WEBHOOK_DELIVERIES
from tests.support.webhook_receiver import Receiver

SECRET = "s3cret"


def result(**changes: Any) -> Result:
    base: dict[str, Any] = dict(
        request_id="req-1", source_id="T-1", kind="reply", title="t", text="hello",
        priority="normal", status="complete", findings=[],
        generation=Generation(provider="offline", model="offline", offline=True),
        usage=Usage(), completed_at=datetime(2026, 11, 21, tzinfo=UTC))
    return Result(**{**base, **changes})


# --- signing --------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1700000000, body) == "sha256=" + expected


def test_verify_accepts_ours_and_rejects_tampering_other_keys_and_stale_times() -> None:
    body, ts = b'{"a":1}', 1700000000
    good = sign(SECRET, ts, body)
    assert verify(SECRET, str(ts), body, good, now=ts + 10)
    assert not verify(SECRET, str(ts), body + b" ", good, now=ts)
    assert not verify("other", str(ts), body, good, now=ts)
    assert not verify(SECRET, str(ts + 1), body, good, now=ts)  # timestamp is signed too
    assert not verify(SECRET, str(ts), body, good, now=ts + 301)  # replayed too late
    assert not verify(SECRET, "soon", body, good, now=ts)
    assert not verify(SECRET, str(ts), body, good.replace("sha256=", "sha1="), now=ts)


# --- where results go -----------------------------------------------------------------------


def test_target_prefers_the_requests_callback_then_source_then_kind_then_star() -> None:
    targets = {"/helpdesk": "http://src", "ticket": "http://kind", "*": "http://any"}
    assert target_for(result(callback_url="http://own", origin="/helpdesk"),
                      targets) == "http://own"
    assert target_for(result(origin="/helpdesk"), targets) == "http://src"
    assert target_for(result(origin="/elsewhere"), targets) == "http://kind"
    assert target_for(result(kind="runbook"), targets) == "http://any"
    assert target_for(result(kind="runbook"), {"ticket": "http://kind"}) is None


def test_shown_url_drops_credentials_and_query() -> None:
    assert shown("https://user:pw@hooks.example:8443/in?token=abc") == \
        "https://hooks.example:8443/in"


# --- the agent against a real receiver ------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Any) -> AgentContext:
    return AgentContext(store=BusinessStore.open(tmp_path / "b.db"), provider=OfflineProvider(),
                        defaults={"webhook_secret": SECRET, "webhook_timeout_s": 5})


async def deliver(ctx: AgentContext, res: Result, attempts: int = 4) -> MemoryBus:
    bus = MemoryBus()
    bus.add(build(ctx), retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.01,
                                          max_delay_s=0.05))
    envelope = Envelope(id="result-event-1", source="/counterpoint/synthesis",
                        type=SYNTHESIS_RESULTS.ce_type, time=datetime.now(UTC),
                        request_id=res.request_id)
    await bus.publish(SYNTHESIS_RESULTS.name, orjson.dumps(res.model_dump(mode="json")),
                      key=res.request_id.encode(), headers=envelope.to_headers())
    await bus.run_until_idle()
    return bus


async def test_delivers_signed_with_the_result_id_as_delivery_id(ctx: AgentContext) -> None:
    with Receiver() as rx:
        bus = await deliver(ctx, result(callback_url=rx.url + "/hook"))
    (got,) = rx.received["/hook"]
    assert got.headers[DELIVERY_HEADER] == "result-event-1"
    assert verify(SECRET, got.headers[TIMESTAMP_HEADER], got.body, got.headers[SIGNATURE_HEADER])
    assert orjson.loads(got.body)["request_id"] == "req-1"
    (record,) = bus.records(WEBHOOK_DELIVERIES.name)
    rid, info = delivery_of(record) or ("", None)
    assert rid == "req-1" and info is not None
    assert (info.state, info.attempts, info.status_code) == ("delivered", 1, 200)
    assert bus.records(DEADLETTER_NAME) == []


async def test_retries_a_failing_receiver_and_counts_the_attempts(ctx: AgentContext) -> None:
    with Receiver({"/flaky": [500, 503]}) as rx:
        bus = await deliver(ctx, result(callback_url=rx.url + "/flaky"))
    assert rx.count("/flaky") == 3
    assert {r.headers[DELIVERY_HEADER] for r in rx.received["/flaky"]} == {"result-event-1"}
    (record,) = bus.records(WEBHOOK_DELIVERIES.name)
    info = WEBHOOK_DELIVERIES.decode(record.value or b"")
    assert info.attempts == 3 and info.status_code == 200


async def test_gives_up_after_the_bound_and_dead_letters_the_result(ctx: AgentContext) -> None:
    with Receiver(default=500) as rx:
        bus = await deliver(ctx, result(callback_url=rx.url + "/down"), attempts=3)
    assert rx.count("/down") == 3
    assert bus.records(WEBHOOK_DELIVERIES.name) == []
    (record,) = bus.records(DEADLETTER_NAME)
    letter = DeadLetter.from_record(record)
    assert (letter.agent, letter.reason, letter.attempts) == ("webhooks", "webhook-failed", 3)
    assert "HTTP 500" in letter.message and "/down" in letter.message
    rid, info = delivery_of(record) or ("", None)
    assert rid == "req-1" and info is not None and info.state == "failed"
    assert orjson.loads(record.value or b"")["request_id"] == "req-1"  # the result, untouched


async def test_a_4xx_is_not_retried(ctx: AgentContext) -> None:
    with Receiver(default=404) as rx:
        bus = await deliver(ctx, result(callback_url=rx.url + "/gone"))
    assert rx.count("/gone") == 1
    (record,) = bus.records(DEADLETTER_NAME)
    assert DeadLetter.from_record(record).reason == "webhook-rejected"


async def test_an_unreachable_receiver_is_retried_then_dead_lettered(ctx: AgentContext) -> None:
    with Receiver() as rx:
        url = rx.url + "/x"
    bus = await deliver(ctx, result(callback_url=url), attempts=2)  # the server is gone
    (record,) = bus.records(DEADLETTER_NAME)
    letter = DeadLetter.from_record(record)
    assert letter.attempts == 2 and "ConnectError" in letter.message


async def test_results_without_a_target_are_left_alone(ctx: AgentContext) -> None:
    bus = await deliver(ctx, result())
    assert bus.records(WEBHOOK_DELIVERIES.name) == [] and bus.records(DEADLETTER_NAME) == []


def test_other_agents_dead_letters_are_not_deliveries() -> None:
    envelope = Envelope(id="e", source="s", type="t", time=datetime.now(UTC), request_id="r")
    record = RawRecord(DEADLETTER_NAME, 0, 0, None, b"{}",
                       (*envelope.to_headers(), ("dlq.agent", b"synthesis")), 0)
    assert delivery_of(record) is None
