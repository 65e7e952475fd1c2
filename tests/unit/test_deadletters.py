"""Dead letters for people (infra.deadletters) and the `counterpoint deadletter` usage errors."""

from __future__ import annotations

import base64
import socket
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from counterpoint.bus.deadletter import DeadLetter, Failure, deadletter_headers
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.errors import DecodeError, SchemaError
from counterpoint.infra import cli
from counterpoint.infra.deadletters import (
    REDRIVE_COUNT,
    REDRIVE_FROM,
    LetterError,
    LetterId,
    filtered,
    find,
    letter_json,
    letter_of,
    original_headers,
    plan_redrive,
    previous_redrives,
    redrive_order,
    render_letter,
    render_list,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OWN_HEADERS = (("traceparent", b"00-abc-def-01"), ("x-origin", b"crm"))


def _source(value: bytes | None = b'{"id": "T-1"}', *, offset: int = 41,
            headers: tuple[tuple[str, bytes], ...] = OWN_HEADERS) -> RawRecord:
    return RawRecord("intake.tickets", 2, offset, b"T-1", value, headers, 1_000)


def _letter(source: RawRecord | None = None, *, partition: int = 1, offset: int = 7,
            error: BaseException | None = None, agent: str = "triage",
            timestamp_ms: int = 1_772_366_400_000) -> DeadLetter:
    """What an agent writes to `deadletter` for `source`, read back at partition:offset."""
    source = source or _source()
    failure = Failure(error or SchemaError("body: Field required"), 1, T0, T0)
    headers = deadletter_headers(source, failure, agent=agent, group=f"counterpoint.{agent}")
    record = RawRecord("deadletter", partition, offset, source.key, source.value,
                       tuple(headers), timestamp_ms)
    return DeadLetter.from_record(record)


# --- ids ------------------------------------------------------------------------------------


def test_letter_ids_round_trip() -> None:
    assert LetterId.parse("0:17") == LetterId(0, 17)
    assert LetterId.parse(" 3:0 ") == LetterId(3, 0)
    assert str(LetterId(2, 1234)) == "2:1234"
    assert LetterId.of(_letter(partition=3, offset=9)) == LetterId(3, 9)


@pytest.mark.parametrize("text", ["17", "0:", ":17", "a:1", "1:b", "-1:2", "1:-2", "1:2:3",
                                  "", "1.5:2", "\u0661:\u0662"])
def test_bad_letter_ids_say_what_an_id_looks_like(text: str) -> None:
    with pytest.raises(LetterError, match="PARTITION:OFFSET"):
        LetterId.parse(text)


def test_find_names_missing_ids_and_what_the_topic_holds() -> None:
    letters = [_letter(partition=0, offset=o) for o in (3, 4, 9)] + [_letter(partition=2,
                                                                             offset=0)]
    assert find(letters, [LetterId(0, 9), LetterId(2, 0)]) == [letters[2], letters[3]]

    with pytest.raises(LetterError) as caught:
        find(letters, [LetterId(0, 9), LetterId(1, 5), LetterId(0, 99)])
    message = str(caught.value)
    assert "no dead letter 1:5, 0:99 in deadletter" in message
    assert "0:3..0:9" in message and "2:0..2:0" in message


def test_find_in_an_empty_topic() -> None:
    with pytest.raises(LetterError, match="the topic is empty"):
        find([], [LetterId(0, 0)])


def test_find_returns_each_letter_once() -> None:
    letters = [_letter(offset=1)]
    assert find(letters, [LetterId(1, 1), LetterId(1, 1)]) == letters


def test_filtered_by_reason_and_source_topic() -> None:
    schema = _letter(offset=1)
    internal = _letter(RawRecord("investigation.findings", 0, 5, b"k", b"{}", (), 1), offset=2)
    assert filtered([schema, internal], reason="schema-violation") == [schema, internal]
    assert filtered([schema, internal], source_topic="intake.tickets") == [schema]
    assert filtered([schema, internal], reason="too-large") == []
    assert filtered([schema, internal]) == [schema, internal]


# --- redrive --------------------------------------------------------------------------------


def test_redrive_sends_the_original_record_back_without_dlq_headers() -> None:
    letter = _letter(partition=1, offset=7)

    plan = plan_redrive(letter)

    assert plan.topic == "intake.tickets"
    assert plan.key == b"T-1" and plan.value == b'{"id": "T-1"}'
    assert plan.count == 1
    assert plan.headers == (*OWN_HEADERS, (REDRIVE_FROM, b"deadletter/1:7"),
                            (REDRIVE_COUNT, b"1"))
    assert plan.reason == "schema-violation"


def test_original_headers_keep_order_and_duplicates() -> None:
    headers = [("a", b"1"), ("dlq.reason", b"x"), ("a", b"2"), ("dlq.redrive.count", b"3"),
               ("dlq-not-ours", b"y")]
    assert original_headers(headers) == [("a", b"1"), ("a", b"2"), ("dlq-not-ours", b"y")]


def test_redrive_count_increments_from_the_letters_own_headers() -> None:
    """A record that was redriven before carries its count; the next redrive adds one."""
    source = _source(headers=(*OWN_HEADERS, (REDRIVE_FROM, b"deadletter/0:1"),
                              (REDRIVE_COUNT, b"2")))
    letter = _letter(source)
    # The dead letter built by hand: the record's own headers, then the letter's.
    kept = RawRecord("deadletter", 1, 7, letter.record.key, letter.record.value,
                     (*source.headers, *letter.record.headers), 1)
    plan = plan_redrive(DeadLetter.from_record(kept))

    assert plan.count == 3
    assert plan.headers[-2:] == ((REDRIVE_FROM, b"deadletter/1:7"), (REDRIVE_COUNT, b"3"))
    assert [k for k, _ in plan.headers].count(REDRIVE_COUNT) == 1


@pytest.mark.parametrize(("headers", "count"), [
    ((), 0), (((REDRIVE_COUNT, b"4"),), 4), (((REDRIVE_COUNT, b"x"),), 0),
    (((REDRIVE_COUNT, b"-3"),), 0), (((REDRIVE_COUNT, b" 2 "),), 2),
])
def test_previous_redrives(headers: tuple[tuple[str, bytes], ...], count: int) -> None:
    assert previous_redrives(headers) == count


def test_a_redriven_record_that_fails_again_keeps_its_redrive_count() -> None:
    plan = plan_redrive(_letter(offset=7))
    redriven = RawRecord(plan.topic, 0, 99, plan.key, plan.value, plan.headers, 2_000)

    again = _letter(redriven, offset=8)

    assert previous_redrives(again.record.headers) == 1
    assert plan_redrive(again).count == 2


def test_a_tombstone_or_a_letter_without_source_cannot_be_redriven() -> None:
    with pytest.raises(LetterError, match="tombstone"):
        plan_redrive(_letter(_source(value=None)))
    foreign = letter_of(RawRecord("deadletter", 0, 3, None, b"{}", (("x", b"y"),), 1))
    with pytest.raises(LetterError, match="0:3 does not say which topic it came from"):
        plan_redrive(foreign)


def test_redrive_order_follows_the_source_partitions() -> None:
    late = _letter(_source(offset=50), offset=1)
    early = _letter(_source(offset=10), offset=2)
    plans = redrive_order([plan_redrive(late), plan_redrive(early)], [late, early])
    assert [p.letter.offset for p in plans] == [2, 1]


# --- reading and rendering ------------------------------------------------------------------


def test_letter_of_tolerates_garbled_dlq_headers() -> None:
    record = RawRecord("deadletter", 0, 1, None, b"x", (
        ("dlq.reason", b"too-large"), ("dlq.source.partition", b"zero"),
        ("dlq.source.topic", b"intake.tickets")), 1)
    letter = letter_of(record)
    assert letter.reason == "too-large" and letter.source_topic == "intake.tickets"
    assert letter.source_partition == -1


def _text(renderable: object) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_list_shows_ids_sources_and_a_count_per_reason() -> None:
    letters = [_letter(offset=1), _letter(offset=2),
               _letter(_source(b"\xff"), offset=3, error=DecodeError("not valid UTF-8"))]

    text = _text(render_list(letters))

    assert "1:1" in text and "1:3" in text
    assert "intake.tickets[2]@41" in text
    assert "2026-03-01 12:00:00Z" in text
    assert "body: Field required" in text
    assert "3 dead letters: schema-violation 2, undecodable 1" in text


def test_list_of_nothing() -> None:
    assert _text(render_list([])).strip() == "0 dead letters"


def test_show_puts_dlq_headers_first_and_pretty_prints_json() -> None:
    text = _text(render_letter(_letter(_source(b'{"id":"T-1","body":[1]}'))))

    lines = text.splitlines()
    first_header = next(i for i, line in enumerate(lines) if "dlq." in line)
    assert "dlq.reason" in lines[first_header]
    assert text.index("dlq.attempts") < text.index("traceparent")
    assert '"body": [' in text  # indented JSON
    assert "b'T-1'" in text


def test_show_summarises_values_that_are_not_json_or_too_big() -> None:
    assert "3 bytes, starting b'\\xff\\xfe!'" in _text(render_letter(_letter(_source(
        b"\xff\xfe!"))))
    big = orjson.dumps({"body": "x" * 100_000})
    text = _text(render_letter(_letter(_source(big))))
    assert f"{len(big):,} bytes, starting" in text and "b'{\"body\":\"xxx" in text
    assert "…" in text and "x" * 300 not in "".join(text.split())


def test_letter_json_carries_everything_show_needs() -> None:
    letter = _letter(_source(b"\xffnot json"), partition=0, offset=5)

    summary = letter_json(letter)
    full = letter_json(letter, full=True)

    assert summary["id"] == "0:5" and summary["reason"] == "schema-violation"
    assert summary["source_topic"] == "intake.tickets" and summary["source_offset"] == 41
    assert summary["redrive_count"] == 0 and "headers" not in summary
    assert full["headers"][0][0] == "dlq.reason"
    assert ["x-origin", "crm"] in full["headers"]
    assert full["key"] == "T-1" and full["value_size"] == 9 and full["value_json"] is None
    assert base64.b64decode(full["value_base64"]) == b"\xffnot json"
    orjson.dumps(full)  # all plain JSON

    null = letter_json(_letter(_source(b"null")), full=True)
    assert null["value_base64"] is None and null["value_json"] is None


# --- CLI usage errors: caught before any broker is contacted --------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("COUNTERPOINT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COUNTERPOINT_BROKER_PORT", str(_closed_port()))


@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize(("argv", "expected"), [
    (["redrive"], "saywhichdeadletterstoredrive"),
    (["redrive", "0:1", "--all"], "eitherIDsor--all/--reason/--source-topic,notboth"),
    (["redrive", "--all", "--reason", "too-large"], "--allredriveseverydeadletter"),
    (["redrive", "nope"], "'nope'isnotadead-letterid"),
    (["redrive", "0:1", "7"], "'7'isnotadead-letterid:expectedPARTITION:OFFSET"),
    (["show", "x:1"], "'x:1'isnotadead-letterid"),
])
def test_deadletter_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                 expected: str) -> None:
    code = cli.main(["deadletter", *argv])
    err = "".join(capsys.readouterr().err.split())
    assert code == 2
    assert expected in err


@pytest.mark.usefixtures("no_broker")
@pytest.mark.parametrize("argv", [["list"], ["show", "0:1"], ["redrive", "0:1"],
                                  ["redrive", "--all", "--dry-run"]])
def test_deadletter_without_a_broker(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code = cli.main(["deadletter", *argv])
    assert code == 3
    assert "noKafkabrokeranswers" in "".join(capsys.readouterr().err.split())
