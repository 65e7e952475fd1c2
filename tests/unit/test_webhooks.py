"""Webhook result delivery: signing, where a result goes, where it may not go (SSRF), and the
agent against a real local HTTP receiver on the in-memory bus (retries, giving up, refusing).

Every connection these tests make goes to 127.0.0.1: `loopback_only` fails any other, and
host names are answered by injected resolvers, never by DNS."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpcore
import orjson
import pytest

from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.agents.webhook_egress import (
    EgressPolicy,
    Resolver,
    kind_of,
    parse_networks,
)
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
LOOPBACK_ALLOWED = EgressPolicy(networks=parse_networks("127.0.0.1/32"))


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every TCP connection httpcore makes here must be to loopback; the hosts it connected to."""
    connected: list[str] = []
    real = httpcore.AnyIOBackend.connect_tcp

    async def guarded(self: httpcore.AnyIOBackend, host: str, port: int,
                      *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        assert ipaddress.ip_address(host).is_loopback, f"a test tried to connect to {host}"
        connected.append(host)
        return await real(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", guarded)
    yield connected


def answers(*rounds: list[str]) -> Resolver:
    """A resolver that answers each lookup with the next round (the last one repeats)."""
    queue = list(rounds)

    async def resolve(host: str, port: int) -> list[str]:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return resolve


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


@dataclass
class Setup:
    """A webhooks agent's context, and where its deliveries may connect."""

    ctx: AgentContext
    egress: EgressPolicy


def context(tmp_path: Any, egress: EgressPolicy, **settings: Any) -> Setup:
    ctx = AgentContext(store=BusinessStore.open(tmp_path / "b.db"), provider=OfflineProvider(),
                       defaults={"webhook_secret": SECRET, "webhook_timeout_s": 5, **settings})
    return Setup(ctx, egress)


@pytest.fixture
def ctx(tmp_path: Any) -> Setup:
    """Deliveries to the local receiver, which configuration must allow explicitly."""
    return context(tmp_path, LOOPBACK_ALLOWED)


async def deliver(setup: Setup, res: Result, attempts: int = 4) -> MemoryBus:
    bus = MemoryBus()
    bus.add(build(setup.ctx, setup.egress),
            retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.01, max_delay_s=0.05))
    envelope = Envelope(id="result-event-1", source="/counterpoint/synthesis",
                        type=SYNTHESIS_RESULTS.ce_type, time=datetime.now(UTC),
                        request_id=res.request_id)
    await bus.publish(SYNTHESIS_RESULTS.name, orjson.dumps(res.model_dump(mode="json")),
                      key=res.request_id.encode(), headers=envelope.to_headers())
    await bus.run_until_idle()
    return bus


async def test_delivers_signed_with_the_result_id_as_delivery_id(ctx: Setup) -> None:
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


async def test_retries_a_failing_receiver_and_counts_the_attempts(ctx: Setup) -> None:
    with Receiver({"/flaky": [500, 503]}) as rx:
        bus = await deliver(ctx, result(callback_url=rx.url + "/flaky"))
    assert rx.count("/flaky") == 3
    assert {r.headers[DELIVERY_HEADER] for r in rx.received["/flaky"]} == {"result-event-1"}
    (record,) = bus.records(WEBHOOK_DELIVERIES.name)
    info = WEBHOOK_DELIVERIES.decode(record.value or b"")
    assert info.attempts == 3 and info.status_code == 200


async def test_gives_up_after_the_bound_and_dead_letters_the_result(ctx: Setup) -> None:
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


async def test_a_4xx_is_not_retried(ctx: Setup) -> None:
    with Receiver(default=404) as rx:
        bus = await deliver(ctx, result(callback_url=rx.url + "/gone"))
    assert rx.count("/gone") == 1
    (record,) = bus.records(DEADLETTER_NAME)
    assert DeadLetter.from_record(record).reason == "webhook-rejected"


async def test_an_unreachable_receiver_is_retried_then_dead_lettered(ctx: Setup) -> None:
    with Receiver() as rx:
        url = rx.url + "/x"
    bus = await deliver(ctx, result(callback_url=url), attempts=2)  # the server is gone
    (record,) = bus.records(DEADLETTER_NAME)
    letter = DeadLetter.from_record(record)
    assert letter.attempts == 2 and "ConnectError" in letter.message


async def test_results_without_a_target_are_left_alone(ctx: Setup) -> None:
    bus = await deliver(ctx, result())
    assert bus.records(WEBHOOK_DELIVERIES.name) == [] and bus.records(DEADLETTER_NAME) == []


def test_other_agents_dead_letters_are_not_deliveries() -> None:
    envelope = Envelope(id="e", source="s", type="t", time=datetime.now(UTC), request_id="r")
    record = RawRecord(DEADLETTER_NAME, 0, 0, None, b"{}",
                       (*envelope.to_headers(), ("dlq.agent", b"synthesis")), 0)
    assert delivery_of(record) is None


# --- where deliveries may not go (SSRF) -------------------------------------------------------


def refused(bus: MemoryBus) -> DeadLetter:
    assert bus.records(WEBHOOK_DELIVERIES.name) == []
    (record,) = bus.records(DEADLETTER_NAME)
    letter = DeadLetter.from_record(record)
    assert (letter.agent, letter.reason, letter.attempts) == ("webhooks", "webhook-refused", 1)
    return letter


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0", "2130706433", "127.1",
                                  "0x7f.1", "[::ffff:127.0.0.1]", "127.0.0.2"])
async def test_by_default_loopback_is_refused_in_every_spelling(
        tmp_path: Any, host: str, loopback_only: list[str]) -> None:
    with Receiver() as rx:
        port = rx.server.server_address[1]
        bus = await deliver(context(tmp_path, EgressPolicy()),
                            result(callback_url=f"http://{host}:{port}/in"))
    assert rx.count("/in") == 0 and loopback_only == []  # refused before any connection
    letter = refused(bus)
    assert "not a public address" in letter.message and "COUNTERPOINT_WEBHOOK_NETWORKS" in (
        letter.message)


async def test_by_default_ipv6_loopback_is_refused(tmp_path: Any,
                                                   loopback_only: list[str]) -> None:
    bus = await deliver(context(tmp_path, EgressPolicy()),
                        result(callback_url="http://[::1]:9/in"))
    assert "::1 is loopback" in refused(bus).message and loopback_only == []


@pytest.mark.parametrize(("address", "kind"), [
    ("169.254.169.254", "a cloud metadata service"), ("fd00:ec2::254", "a cloud metadata service"),
    ("100.100.100.200", "a cloud metadata service"), ("10.1.2.3", "private"),
    ("192.168.0.1", "private"), ("172.16.0.1", "private"), ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("100.64.0.1", "not globally routable"),
    ("::ffff:10.0.0.1", "private"), ("64:ff9b::a9fe:a9fe", "a cloud metadata service"),
    ("2002:7f00:1::", "loopback"), ("192.0.2.1", "private"), ("240.0.0.1", "private"),
])
def test_non_public_addresses_are_named(address: str, kind: str) -> None:
    assert kind_of(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert kind_of(ipaddress.ip_address(address)) is None


async def test_metadata_service_is_refused_without_a_connection(
        tmp_path: Any, loopback_only: list[str]) -> None:
    bus = await deliver(context(tmp_path, EgressPolicy()),
                        result(callback_url="http://169.254.169.254/latest/meta-data/"))
    assert "169.254.169.254 is a cloud metadata service" in refused(bus).message
    assert loopback_only == []


async def test_a_host_name_resolving_to_loopback_is_refused(
        tmp_path: Any, loopback_only: list[str]) -> None:
    egress = EgressPolicy(resolve=answers(["93.184.216.34", "127.0.0.1"]))
    bus = await deliver(context(tmp_path, egress), result(callback_url="http://hooks.test/in"))
    assert "hooks.test resolves to 127.0.0.1, which is loopback" in refused(bus).message
    assert loopback_only == []


async def test_dns_rebinding_is_refused_at_connect_time(
        tmp_path: Any, loopback_only: list[str]) -> None:
    """First answer public (the check before the POST passes), then loopback: the connection
    itself checks again and goes nowhere."""
    with Receiver() as rx:
        port = rx.server.server_address[1]
        egress = EgressPolicy(resolve=answers(["93.184.216.34"], ["127.0.0.1"]))
        bus = await deliver(context(tmp_path, egress),
                            result(callback_url=f"http://rebind.test:{port}/in"))
    assert rx.count("/in") == 0 and loopback_only == []
    assert "rebind.test resolves to 127.0.0.1" in refused(bus).message


async def test_connections_go_to_the_checked_address_not_the_name(
        loopback_only: list[str]) -> None:
    with Receiver() as rx:
        port = rx.server.server_address[1]
        egress = EgressPolicy(networks=parse_networks("127.0.0.0/8"),
                              resolve=answers(["127.0.0.1"]))
        async with egress.client(timeout_s=5, tls=ssl.create_default_context()) as client:
            response = await client.post(f"http://receiver.test:{port}/in", content=b"{}")
    assert response.status_code == 200 and rx.count("/in") == 1
    assert loopback_only == ["127.0.0.1"]  # the resolver's answer, as checked, not the name
    assert rx.received["/in"][0].headers["Host"] == f"receiver.test:{port}"


async def test_allowed_hosts_restrict_callback_urls_but_not_configured_targets(
        tmp_path: Any) -> None:
    egress = EgressPolicy(hosts=("hooks.example",), networks=parse_networks("127.0.0.1/32"))
    with Receiver() as rx:
        refused_bus = await deliver(context(tmp_path, egress),
                                    result(callback_url=rx.url + "/own"))
        configured = await deliver(
            context(tmp_path, egress, webhooks={"ticket": rx.url + "/configured"}), result())
    assert "not in COUNTERPOINT_WEBHOOK_HOSTS" in refused(refused_bus).message
    assert rx.count("/own") == 0 and rx.count("/configured") == 1
    assert len(configured.records(WEBHOOK_DELIVERIES.name)) == 1
    assert EgressPolicy(hosts=("*.example.com",)).host_allowed("a.b.example.com")
    assert not EgressPolicy(hosts=("*.example.com",)).host_allowed("example.com.evil")


async def test_schemes_other_than_http_are_refused(tmp_path: Any) -> None:
    bus = await deliver(context(tmp_path, EgressPolicy()),
                        result(callback_url="file:///etc/passwd"))
    assert "scheme 'file'" in refused(bus).message


def test_bad_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP network"):
        parse_networks("127.0.0.1/32, 10.0.0.0/33")


async def test_a_receivers_answer_never_comes_back(tmp_path: Any) -> None:
    with Receiver(default=403, body=b"internal: db password is hunter2") as rx:
        bus = await deliver(context(tmp_path, LOOPBACK_ALLOWED),
                            result(callback_url=rx.url + "/in"))
    (record,) = bus.records(DEADLETTER_NAME)
    letter = DeadLetter.from_record(record)
    assert letter.reason == "webhook-rejected" and "HTTP 403 Forbidden" in letter.message
    assert "hunter2" not in letter.message and "internal" not in letter.message
    _, info = delivery_of(record) or ("", None)
    assert info is not None and "hunter2" not in (info.error or "")


async def test_logs_and_letters_carry_no_url_credentials_or_query(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Receiver(default=404) as rx:
        url = rx.url.replace("http://", "http://hook-user:pw-s3cret@") + "/in?auth=q-s3cret"
        bus = await deliver(context(tmp_path, LOOPBACK_ALLOWED), result(callback_url=url))
    assert rx.count("/in?auth=q-s3cret") == 1  # the receiver gets its URL whole
    (record,) = bus.records(DEADLETTER_NAME)
    said = caplog.text + DeadLetter.from_record(record).message
    assert f"POST {rx.url}/in (attempt 1)" in said
    assert "pw-s3cret" not in said and "q-s3cret" not in said and "hook-user" not in said


async def test_a_non_http_answer_is_not_quoted_back(tmp_path: Any) -> None:
    """A service that is not HTTP answers with its banner; the protocol error would quote it."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-internal-banner-xyz\r\n")
            # Half-close, then read what the client still sends until it hangs up: closing
            # with its body unread would send a reset (ReadError), not the banner.
            conn.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                while conn.recv(65536):
                    pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        bus = await deliver(context(tmp_path, LOOPBACK_ALLOWED),
                            result(callback_url=f"http://127.0.0.1:{port}/in"), attempts=1)
    finally:
        thread.join(5)
        server.close()
    (record,) = bus.records(DEADLETTER_NAME)
    message = DeadLetter.from_record(record).message
    assert "RemoteProtocolError" in message and "banner" not in message
