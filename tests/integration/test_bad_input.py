"""Hundreds of malformed records of every kind, mixed with valid ones, on a real broker with one
OS process per agent: every bad one is dead-lettered with the right reason and its original
bytes, every valid one gets exactly one result, no agent exits. Then redrive, end to end."""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.infra.deadletters import REDRIVE_COUNT, REDRIVE_FROM
from counterpoint.infra.demo import example
from counterpoint.topics.registry import (
    INTAKE_ALERTS,
    INTAKE_TICKETS,
    INVESTIGATION_FINDINGS,
    TRIAGE_DECISIONS,
)
from tests.integration.conftest import AgentStack, embedded_broker
from tests.integration.helpers import collect, wait_deadletters, wait_results

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

T = TypeVar("T")
Headers = list[tuple[str, bytes]]
TICKETS, ALERTS = INTAKE_TICKETS.name, INTAKE_ALERTS.name
COPIES = 10  # of each bad kind; the 2 MiB kind fewer


@dataclass
class Input:
    kind: str
    topic: str
    value: bytes | None
    reason: str | None  # None: valid, expect a result
    key: bytes | None = None
    headers: Headers = field(default_factory=list)
    source_id: str | None = None  # the result's source_id, for valid inputs
    coord: tuple[str, int, int] | None = None


def _uid() -> str:
    return uuid.uuid4().hex[:10]


def _ticket(**overrides: Any) -> dict[str, Any]:
    return {"id": f"T-bad-{_uid()}", "customer_id": "C-42", "subject": "Invoice",
            "body": "I was charged twice on my invoice", "channel": "email", **overrides}


def _alertmanager(**alert: Any) -> dict[str, Any]:
    body = orjson.loads(example("alert_alertmanager.json"))
    body["alerts"][0].update({"fingerprint": _uid(), **alert})
    return dict(body)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _ce_headers(ce_type: str, **extra: bytes) -> Headers:
    headers = [("ce_specversion", b"1.0"), ("ce_id", f"ev-{_uid()}".encode()),
               ("ce_source", b"/tests/bad-input"), ("ce_type", ce_type.encode())]
    return headers + [(f"ce_{k}", v) for k, v in extra.items()]


def _finding() -> dict[str, Any]:
    return {"task_id": f"task-{_uid()}", "request_id": f"req-{_uid()}", "skill": "billing",
            "focus": "invoices", "agent": "billing", "summary": "s", "facts": [],
            "generation": {"provider": "offline", "model": "m", "offline": True},
            "usage": {"input_tokens": 1, "output_tokens": 1, "calls": 1}}


def _bad(kind: str) -> Input:
    """One malformed record of `kind`: fresh ids each time."""
    j = orjson.dumps
    match kind:
        case "not-json":
            return Input(kind, TICKETS, b"{this is not json", "undecodable")
        case "empty-value":
            return Input(kind, TICKETS, b"", "undecodable")
        case "tombstone":
            return Input(kind, TICKETS, None, "undecodable", key=b"T-tombstone")
        case "latin-1":
            return Input(kind, TICKETS, f'{{"id": "T-{_uid()}", "body": "café"}}'.encode(
                "latin-1"), "undecodable")
        case "json-array":
            return Input(kind, TICKETS, b"[1, 2, 3]", "schema-violation")
        case "json-scalar":
            return Input(kind, ALERTS, b"42", "schema-violation")
        case "missing-body":
            ticket = _ticket()
            del ticket["body"]
            return Input(kind, TICKETS, j(ticket), "schema-violation")
        case "empty-body":
            return Input(kind, TICKETS, j(_ticket(body="")), "schema-violation")
        case "wrong-types":
            return Input(kind, TICKETS, j(_ticket(id=123, body=["x"])), "schema-violation")
        case "simple-alert-no-service":
            return Input(kind, ALERTS, j({"id": f"A-{_uid()}", "summary": "disk full"}),
                         "schema-violation")
        case "alertmanager-no-alerts":
            body = _alertmanager()
            body["alerts"] = []
            return Input(kind, ALERTS, j(body), "schema-violation")
        case "alertmanager-bad-startsat":
            return Input(kind, ALERTS, j(_alertmanager(startsAt="yesterday-ish")),
                         "schema-violation")
        case "oversized":
            return Input(kind, TICKETS, j(_ticket(body="x" * (2 * 1024 * 1024))), "too-large")
        case "deep-40":
            return Input(kind, TICKETS, j(_ticket(extra=_nested(39))), "too-deep")
        case "deep-2000":
            return Input(kind, ALERTS, b"[" * 2000 + b"]" * 2000, "too-deep")
        case "structured-ce-no-id":
            event = {"specversion": "1.0", "source": "/crm", "type": "com.example.ticket",
                     "data": _ticket()}
            return Input(kind, TICKETS, j(event), "undecodable")
        case "binary-ce-bad-specversion":
            return Input(kind, TICKETS, j(_ticket()), "undecodable",
                         headers=[("ce_specversion", b"0.3"), ("ce_id", b"x"),
                                  ("ce_source", b"/crm"), ("ce_type", b"t")])
        case "binary-ce-header-not-utf8":
            return Input(kind, TICKETS, j(_ticket()), "undecodable",
                         headers=_ce_headers("com.example.ticket", subject=b"\xff\xfe"))
        case "internal-no-envelope":
            return Input(kind, TRIAGE_DECISIONS.name, j({"request_id": f"r-{_uid()}"}),
                         "undecodable", key=f"r-{_uid()}".encode())
        case "internal-wrong-type":
            return Input(kind, INVESTIGATION_FINDINGS.name, j(_finding()), "unknown-event-type",
                         key=f"r-{_uid()}".encode(),
                         headers=_ce_headers("counterpoint.triage.decision"))
        case "internal-bad-data":
            finding = _finding()
            finding["skill"] = "astrology"
            finding["surprise"] = True
            return Input(kind, INVESTIGATION_FINDINGS.name, j(finding), "schema-violation",
                         key=f"r-{_uid()}".encode(),
                         headers=_ce_headers(INVESTIGATION_FINDINGS.ce_type))
    raise AssertionError(kind)


BAD_KINDS = ("not-json", "empty-value", "tombstone", "latin-1", "json-array", "json-scalar",
             "missing-body", "empty-body", "wrong-types", "simple-alert-no-service",
             "alertmanager-no-alerts", "alertmanager-bad-startsat", "oversized", "deep-40",
             "deep-2000", "structured-ce-no-id", "binary-ce-bad-specversion",
             "binary-ce-header-not-utf8", "internal-no-envelope", "internal-wrong-type",
             "internal-bad-data")


def _good(i: int) -> Input:
    """Valid input of several shapes, including a few that look odd but are fine."""
    j = orjson.dumps
    tid = f"T-good-{_uid()}"
    match i % 7:
        case 0:
            return Input("raw-ticket", TICKETS, j(_ticket(id=tid)), None, key=tid.encode(),
                         source_id=tid)
        case 1:  # intake takes any outside ce_type: the topic gives the meaning
            return Input("binary-ce-any-type", TICKETS, j(_ticket(id=tid)), None,
                         headers=_ce_headers(f"com.example.{_uid()}.anything"), source_id=tid)
        case 2:
            event = {"specversion": "1.0", "id": f"crm-{_uid()}", "source": "/crm",
                     "type": "com.example.ticket.created", "data": _ticket(id=tid)}
            return Input("structured-ce", TICKETS, j(event), None, source_id=tid)
        case 3:
            aid = f"A-good-{_uid()}"
            return Input("simple-alert", ALERTS, j({"id": aid, "service": "checkout-api",
                                                    "severity": "critical",
                                                    "summary": "5xx ratio above 5%"}),
                         None, source_id=aid)
        case 4:
            body = _alertmanager()
            return Input("alertmanager", ALERTS, j(body), None,
                         source_id=body["alerts"][0]["fingerprint"])
        case 5:  # 32 levels: exactly the limit
            return Input("deep-32", TICKETS, j(_ticket(id=tid, extra=_nested(31))), None,
                         source_id=tid)
        case _:
            return Input("unicode-and-extras", TICKETS, j(_ticket(
                id=tid, body="Ma facture est fausse — I was charged twice 💸",
                crm={"priority": "P2", "tags": ["vip"]})), None, source_id=tid)


def _inputs(seed: int = 7) -> list[Input]:
    bad = [_bad(kind) for kind in BAD_KINDS
           for _ in range(3 if kind == "oversized" else COPIES)]
    good = [_good(i) for i in range(100)]
    mixed = bad + good
    random.Random(seed).shuffle(mixed)
    return mixed


def _publish(bootstrap: str, inputs: list[Input]) -> None:
    """Publish with librdkafka (a foreign client, allowed large records); fills `coord`."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 10_000_000,
                         "linger.ms": 5})
    errors: list[str] = []

    def delivered(item: Input) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{item.kind}: {err}")
            else:
                item.coord = (msg.topic(), msg.partition(), msg.offset())
        return report

    for item in inputs:
        headers: Any = item.headers or None
        try:
            producer.produce(item.topic, value=item.value, key=item.key, headers=headers,
                             on_delivery=delivered(item))
        except (BufferError, KafkaException):
            producer.flush(30)
            producer.produce(item.topic, value=item.value, key=item.key, headers=headers,
                             on_delivery=delivered(item))
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not errors, errors
    assert all(item.coord is not None for item in inputs)


def _at(item: Input) -> tuple[str, int, int]:
    assert item.coord is not None, f"{item.kind} was not published"
    return item.coord


def _cli(stack: AgentStack, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("counterpoint")
    return subprocess.run([str(exe), *args], env={**stack.env, "COLUMNS": "250"},
                          capture_output=True, text=True, timeout=120, check=False)


def _coord(letter: DeadLetter) -> tuple[str, int, int]:
    return letter.source_topic, letter.source_partition, letter.source_offset


async def _while_alive(stack: AgentStack, waiting: Awaitable[T], what: str) -> T:
    """`waiting`, but fail at once (with the logs) should an agent process exit meanwhile."""
    task = asyncio.ensure_future(waiting)
    while not task.done():
        await asyncio.wait({task}, timeout=0.5)
        if not task.done() and not stack.all_alive():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            raise AssertionError(f"an agent exited while waiting for {what}\n{stack.logs()}")
    return task.result()


async def test_every_bad_record_is_dead_lettered_with_its_reason_and_valid_ones_complete(
        pipeline: AgentStack) -> None:
    inputs = _inputs()
    await asyncio.to_thread(_publish, pipeline.bootstrap, inputs)
    bad = {_at(item): item for item in inputs if item.reason is not None}
    good = {item.source_id: item for item in inputs if item.reason is None}
    assert len(bad) >= 200 and len(good) == 100

    letters = await _while_alive(pipeline, wait_deadletters(
        pipeline.bootstrap, lambda d: _coord(d) in bad, count=len(bad), timeout_s=120),
        "dead letters")
    results = await _while_alive(pipeline, wait_results(
        pipeline.bootstrap, lambda r: r.source_id in good, count=len(good), timeout_s=120),
        "results")

    assert pipeline.all_alive(), pipeline.logs()
    by_coord: dict[tuple[str, int, int], list[DeadLetter]] = {}
    for letter in letters:
        by_coord.setdefault(_coord(letter), []).append(letter)
    missing = Counter(item.kind for coord, item in bad.items() if coord not in by_coord)
    assert not missing, f"not dead-lettered: {dict(missing)}\n{pipeline.logs()}"
    wrong = [(item.kind, item.reason, by_coord[coord][0].reason, by_coord[coord][0].message)
             for coord, item in bad.items() if by_coord[coord][0].reason != item.reason]
    assert not wrong, wrong
    for coord, item in bad.items():
        letter = by_coord[coord][0]
        # Redelivery after a rebalance may dead-letter a record twice; never differently.
        assert {(d.reason, d.record.value) for d in by_coord[coord]} == {
            (item.reason, item.value)}, item.kind
        assert letter.record.value == item.value, item.kind  # original bytes untouched
        assert letter.record.key == item.key, item.kind
        assert [h for h in letter.record.headers if not h[0].startswith("dlq.")] == \
            item.headers, item.kind
        assert letter.message, item.kind
        assert letter.agent == ("triage" if item.topic in (TICKETS, ALERTS) else "synthesis")

    message = {item.kind: by_coord[coord][0].message for coord, item in bad.items()}
    assert "COUNTERPOINT_MAX_MESSAGE_BYTES" in message["oversized"]
    assert "40 levels deep; the limit is 32" in message["deep-40"]
    assert "more than 1024 levels" in message["deep-2000"]
    assert "not valid UTF-8" in message["latin-1"]
    assert "tombstone" in message["tombstone"]
    assert "body" in message["missing-body"] and "body" in message["empty-body"]
    assert "ce_id" in message["structured-ce-no-id"]
    assert "ce_specversion" in message["binary-ce-bad-specversion"]
    assert "counterpoint.triage.decision" in message["internal-wrong-type"]
    assert "startsAt" in message["alertmanager-bad-startsat"]
    assert "alerts" in message["alertmanager-no-alerts"]

    per_source = Counter(r.source_id for r in results)
    assert set(per_source) == set(good), set(good) - set(per_source)
    assert set(per_source.values()) == {1}
    assert {r.status for r in results} == {"complete"}, [
        (r.source_id, r.missing) for r in results if r.status != "complete"]
    valid_coords = {item.coord for item in good.values()}
    assert not [d for d in letters if _coord(d) in valid_coords]

    listed = await asyncio.to_thread(_cli, pipeline, "deadletter", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    ours = [row for row in rows if (row["source_topic"], row["source_partition"],
                                    row["source_offset"]) in bad]
    assert Counter(row["reason"] for row in ours) >= Counter(i.reason for i in bad.values())
    table = await asyncio.to_thread(_cli, pipeline, "deadletter", "list", "--reason",
                                    "too-large")
    assert table.returncode == 0, table.stderr
    assert re.search(r"\d+ dead letters?: too-large \d+", table.stdout), table.stdout
    assert "bytes; the limit is 1,048,576" in table.stdout
    assert pipeline.all_alive(), pipeline.logs()


async def _letter_for(stack: AgentStack, coord: tuple[str, int, int]) -> DeadLetter:
    letters = await _while_alive(stack, wait_deadletters(
        stack.bootstrap, lambda d: _coord(d) == coord, count=1), "a dead letter")
    assert letters, f"no dead letter for {coord}\n{stack.logs()}"
    return letters[0]


async def _record_at(stack: AgentStack, coord: tuple[str, int, int]) -> RawRecord:
    topic, partition, offset = coord
    records = await collect(stack.bootstrap, topic, lambda rs: any(
        (r.partition, r.offset) == (partition, offset) for r in rs), timeout_s=30)
    return next(r for r in records if (r.partition, r.offset) == (partition, offset))


async def _bad_ticket_letter(stack: AgentStack) -> tuple[Input, DeadLetter]:
    ticket = _ticket(id=f"T-redrive-{_uid()}")
    del ticket["body"]
    item = Input("missing-body", TICKETS, orjson.dumps(ticket), "schema-violation",
                 key=ticket["id"].encode(),
                 headers=[("x-origin", b"crm-7"), ("traceparent",
                           b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
    await asyncio.to_thread(_publish, stack.bootstrap, [item])
    assert item.coord is not None
    return item, await _letter_for(stack, item.coord)


def _sent_to(stdout: str, topic: str) -> tuple[str, int, int]:
    found = re.search(rf"->{re.escape(topic)}\[(\d+)\]@(\d+)", "".join(stdout.split()))
    assert found, stdout
    return topic, int(found[1]), int(found[2])


async def test_redrive_sends_the_original_record_back_to_its_source_topic(
        pipeline: AgentStack) -> None:
    item, letter = await _bad_ticket_letter(pipeline)
    letter_id = f"{letter.record.partition}:{letter.record.offset}"

    shown = await asyncio.to_thread(_cli, pipeline, "deadletter", "show", letter_id, "--json")
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["reason"] == "schema-violation" and detail["value_json"] == orjson.loads(
        item.value or b"")
    assert [name for name, _ in detail["headers"]][:2] == ["dlq.reason", "dlq.error.class"]

    dry = await asyncio.to_thread(_cli, pipeline, "deadletter", "redrive", letter_id,
                                  "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"wouldsenddeadletter/{letter_id}" in "".join(dry.stdout.split())
    missing = await asyncio.to_thread(_cli, pipeline, "deadletter", "redrive", "0:99999999")
    assert missing.returncode == 2
    assert "nodeadletter0:99999999indeadletter" in "".join(missing.stderr.split())

    redriven = await asyncio.to_thread(_cli, pipeline, "deadletter", "redrive", letter_id)
    assert redriven.returncode == 0, redriven.stderr
    coord = _sent_to(redriven.stdout, TICKETS)

    record = await _record_at(pipeline, coord)
    assert record.value == item.value and record.key == item.key
    assert list(record.headers) == [*item.headers,
                                    (REDRIVE_FROM, f"deadletter/{letter_id}".encode()),
                                    (REDRIVE_COUNT, b"1")]

    # The cause is not fixed, so triage dead-letters it again: a new letter, same reason.
    again = await _letter_for(pipeline, coord)
    assert again.reason == "schema-violation" and again.record.value == item.value
    assert (again.record.partition, again.record.offset) != (letter.record.partition,
                                                               letter.record.offset)
    assert pipeline.all_alive(), pipeline.logs()


async def test_a_redriven_record_dead_lettered_again_shows_its_redrive_count(
        pipeline: AgentStack) -> None:
    _, letter = await _bad_ticket_letter(pipeline)
    letter_id = f"{letter.record.partition}:{letter.record.offset}"
    redriven = await asyncio.to_thread(_cli, pipeline, "deadletter", "redrive", letter_id)
    assert redriven.returncode == 0, redriven.stderr
    again = await _letter_for(pipeline, _sent_to(redriven.stdout, TICKETS))

    shown = await asyncio.to_thread(_cli, pipeline, "deadletter", "show",
                                    f"{again.record.partition}:{again.record.offset}", "--json")

    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert ["dlq.redrive.count", "1"] in detail["headers"]
    assert detail["redrive_count"] == 1


# --- limits from the environment, and a redrive once the cause is fixed ---------------------


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[str]:
    """A broker of this test's own: its triage group cannot steal the shared pipeline's work."""
    with embedded_broker(tmp_path) as servers:
        yield servers


async def _decided(bootstrap: str, source_ids: set[str], timeout_s: float = 30) -> set[str]:
    """Which of `source_ids` triage has published a decision for."""
    def seen(records: list[RawRecord]) -> set[str]:
        return {TRIAGE_DECISIONS.decode(r.value).subject.source_id for r in records
                if r.value is not None} & source_ids

    records = await collect(bootstrap, TRIAGE_DECISIONS.name,
                            lambda rs: seen(rs) == source_ids, timeout_s)
    return seen(records)


async def test_small_limits_from_the_environment_and_redrive_after_raising_them(
        own_broker: str, tmp_path: Path) -> None:
    j = orjson.dumps
    big_id, deep_id, fine_id = (f"T-{name}-{_uid()}" for name in ("big", "deep", "fine"))
    big = Input("big", TICKETS, j(_ticket(id=big_id, body="x" * 10_000)), "too-large",
                key=big_id.encode(), headers=[("x-origin", b"crm")])
    deep = Input("deep", TICKETS, j(_ticket(id=deep_id, extra=_nested(9))), "too-deep")
    fine = Input("fine", TICKETS, j(_ticket(id=fine_id)), None)
    home = tmp_path / "home"

    strict = AgentStack(own_broker, home, {"triage": 1}, {
        "COUNTERPOINT_MAX_MESSAGE_BYTES": "4096", "COUNTERPOINT_MAX_JSON_DEPTH": "8"})
    try:
        await asyncio.to_thread(strict.wait_joined)
        await asyncio.to_thread(_publish, own_broker, [big, deep, fine])
        wanted = {big.coord, deep.coord}
        letters = {_coord(d): d for d in await _while_alive(strict, wait_deadletters(
            own_broker, lambda d: _coord(d) in wanted, count=2), "dead letters")}
        assert await _decided(own_broker, {fine_id}) == {fine_id}
        assert strict.all_alive(), strict.logs()
    finally:
        strict.stop()
    assert big.coord is not None and deep.coord is not None
    assert letters[big.coord].reason == "too-large"
    assert letters[big.coord].message == (
        f"record is {len(big.value or b''):,} bytes; the limit is 4,096 "
        "(COUNTERPOINT_MAX_MESSAGE_BYTES)")
    assert letters[deep.coord].reason == "too-deep"
    assert letters[deep.coord].message == ("JSON nests 10 levels deep; the limit is 8 "
                                           "(COUNTERPOINT_MAX_JSON_DEPTH)")

    # The fix: triage restarts with the default limits. Then the too-large letter goes back.
    relaxed = AgentStack(own_broker, home, {"triage": 1})
    try:
        await asyncio.to_thread(relaxed.wait_joined)
        unconfirmed = await asyncio.to_thread(_cli, relaxed, "deadletter", "redrive",
                                              "--reason", "too-large")
        assert unconfirmed.returncode == 2
        assert "add--yes" in "".join(unconfirmed.stderr.split())

        redriven = await asyncio.to_thread(_cli, relaxed, "deadletter", "redrive",
                                           "--reason", "too-large", "--yes")
        assert redriven.returncode == 0, redriven.stderr
        assert "redrove1deadletter" in "".join(redriven.stdout.split())
        coord = _sent_to(redriven.stdout, TICKETS)
        record = await _record_at(relaxed, coord)
        assert record.value == big.value and record.key == big.key

        assert await _while_alive(relaxed, _decided(own_broker, {big_id}), "a decision") == {
            big_id}
        again = await wait_deadletters(own_broker, lambda d: _coord(d) == coord, count=1,
                                       timeout_s=2)
        assert again == []
        assert relaxed.all_alive(), relaxed.logs()
    finally:
        relaxed.stop()
