"""Dead letters for people: list, show and redrive (the `counterpoint deadletter` commands).

A dead letter is named by where it sits in the `deadletter` topic: `PARTITION:OFFSET`, as
`counterpoint deadletter list` prints it.

Redrive sends a letter's original record back to its source topic: the original key, value
and headers, minus the dead-letter headers (`dlq.*`), plus

    dlq.redrive.from    "deadletter/PARTITION:OFFSET", the letter it came from
    dlq.redrive.count   how many times this record has been redriven (1 the first time)

Kafka cannot delete single records, so a redriven letter stays in `deadletter`; redriving it
twice sends it twice. A record that fails again is dead-lettered again, as a new letter.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from counterpoint.bus.deadletter import PREFIX, DeadLetter
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, Producer, tail
from counterpoint.topics.registry import DEADLETTER_NAME

REDRIVE_FROM: Final = PREFIX + "redrive.from"
REDRIVE_COUNT: Final = PREFIX + "redrive.count"
# Values up to this size are pretty-printed by `show`; larger ones are summarised.
SHOW_MAX_BYTES: Final = 64 * 1024
PREVIEW_BYTES: Final = 200
MESSAGE_WIDTH: Final = 100


class LetterError(ValueError):
    """A dead-letter id or selection that names nothing redrivable; the message says why."""


# --- ids ------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class LetterId:
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> LetterId:
        part, sep, off = text.strip().partition(":")
        if not sep or not _whole(part) or not _whole(off):
            raise LetterError(f"{text!r} is not a dead-letter id: expected PARTITION:OFFSET "
                              "(e.g. 0:17), as `counterpoint deadletter list` shows it")
        return cls(int(part), int(off))

    @classmethod
    def of(cls, letter: DeadLetter) -> LetterId:
        return cls(letter.record.partition, letter.record.offset)


def _whole(text: str) -> bool:
    return text.isascii() and text.isdigit()


# --- reading --------------------------------------------------------------------------------


def letter_of(record: RawRecord) -> DeadLetter:
    """`DeadLetter.from_record`, tolerant of records someone else wrote with odd headers."""
    try:
        return DeadLetter.from_record(record)
    except ValueError:
        h = _text_headers(record.headers)
        return DeadLetter(record=record, reason=h.get("dlq.reason", "?"),
                          error_class=h.get("dlq.error.class", "?"),
                          message=h.get("dlq.error.message", ""),
                          source_topic=h.get("dlq.source.topic", "?"), source_partition=-1,
                          source_offset=-1, agent=h.get("dlq.agent", "?"), attempts=0)


async def read_letters(config: KafkaConfig) -> list[DeadLetter]:
    """Every letter in `deadletter`, oldest first (read without a consumer group)."""
    letters: list[DeadLetter] = []
    async with aclosing(tail(config, [DEADLETTER_NAME], idle_timeout_s=0.5)) as stream:
        async for record in stream:
            letters.append(letter_of(record))
    letters.sort(key=lambda d: (d.record.timestamp_ms, d.record.partition, d.record.offset))
    return letters


def filtered(letters: Iterable[DeadLetter], *, reason: str | None = None,
             source_topic: str | None = None) -> list[DeadLetter]:
    return [d for d in letters
            if (reason is None or d.reason == reason)
            and (source_topic is None or d.source_topic == source_topic)]


def find(letters: Sequence[DeadLetter], ids: Sequence[LetterId]) -> list[DeadLetter]:
    """The letters named by `ids`, in that order; LetterError naming any that do not exist."""
    by_id = {LetterId.of(d): d for d in letters}
    missing = [str(i) for i in ids if i not in by_id]
    if missing:
        raise LetterError(f"no dead letter {', '.join(missing)} in {DEADLETTER_NAME} "
                          f"({_ranges(letters)})")
    return [by_id[i] for i in dict.fromkeys(ids)]


def _ranges(letters: Sequence[DeadLetter]) -> str:
    if not letters:
        return "the topic is empty"
    spans: dict[int, list[int]] = {}
    for d in letters:
        spans.setdefault(d.record.partition, []).append(d.record.offset)
    shown = ", ".join(f"{p}:{min(o)}..{p}:{max(o)}" for p, o in sorted(spans.items()))
    return f"it holds {shown}"


# --- redrive --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redrive:
    """One record to send back: where to, and exactly what."""

    letter: LetterId
    reason: str
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    count: int
    partition: int | None = None  # the source partition, so keyed order is kept


def original_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The record's own headers: everything except the dead-letter (`dlq.*`) ones."""
    return [(k, v) for k, v in headers if not k.startswith(PREFIX)]


def previous_redrives(headers: Iterable[tuple[str, bytes]]) -> int:
    """How many times the record in a letter had been redriven before (0 if never)."""
    count = 0
    for k, v in headers:
        if k == REDRIVE_COUNT:
            text = v.decode("ascii", "replace").strip()
            count = int(text) if _whole(text) else count
    return count


def plan_redrive(letter: DeadLetter) -> Redrive:
    """What redriving `letter` sends; LetterError when it cannot be sent back."""
    lid = LetterId.of(letter)
    if letter.source_topic in ("", "?") or letter.source_topic == DEADLETTER_NAME:
        raise LetterError(f"dead letter {lid} does not say which topic it came from "
                          "(no dlq.source.topic header); it cannot be redriven")
    if letter.record.value is None:
        raise LetterError(f"dead letter {lid} has no value (a tombstone); nothing to redrive")
    count = previous_redrives(letter.record.headers) + 1
    headers = [*original_headers(letter.record.headers),
               (REDRIVE_FROM, f"{DEADLETTER_NAME}/{lid}".encode()),
               (REDRIVE_COUNT, str(count).encode())]
    return Redrive(letter=lid, reason=letter.reason, topic=letter.source_topic,
                   key=letter.record.key, value=letter.record.value, headers=tuple(headers),
                   count=count,
                   partition=letter.source_partition if letter.source_partition >= 0 else None)


def redrive_order(plans: Iterable[Redrive], letters: Sequence[DeadLetter]) -> list[Redrive]:
    """Plans in the order their records first sat in their source partitions."""
    where = {LetterId.of(d): (d.source_topic, d.source_partition, d.source_offset)
             for d in letters}
    return sorted(plans, key=lambda p: (where.get(p.letter, (p.topic, -1, -1)), p.letter))


async def send(config: KafkaConfig, plans: Sequence[Redrive],
               sent: list[tuple[Redrive, int, int]]) -> None:
    """Send each plan and wait for its ack, appending (plan, partition, offset) to `sent` as
    each is acknowledged (so a failure part-way still says what went out)."""
    async with Producer(config, client_id="counterpoint-deadletter") as producer:
        for plan in plans:
            partition, offset = await producer.send(plan.topic, plan.value, key=plan.key,
                                                    headers=plan.headers,
                                                    partition=plan.partition)
            sent.append((plan, partition, offset))


# --- rendering ------------------------------------------------------------------------------


def when(letter: DeadLetter) -> str:
    ms = letter.record.timestamp_ms
    if ms <= 0:
        return "?"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def source_of(letter: DeadLetter) -> str:
    return f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset}"


def trimmed(text: str, width: int = MESSAGE_WIDTH) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def render_list(letters: Sequence[DeadLetter]) -> RenderableType:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("reason", no_wrap=True)
    table.add_column("agent")
    table.add_column("tries", justify="right")
    table.add_column("message", overflow="fold")
    for d in letters:
        table.add_row(str(LetterId.of(d)), when(d), escape(source_of(d)), d.reason,
                      escape(d.agent), str(d.attempts), escape(trimmed(d.message)))
    counts = Counter(d.reason for d in letters)
    summary = Text(f"{len(letters)} dead letter{'' if len(letters) == 1 else 's'}")
    if counts:
        summary.append(": " + ", ".join(f"{r} {n}" for r, n in sorted(counts.items())))
    return Group(table, Text(""), summary) if letters else summary


def letter_json(letter: DeadLetter, *, full: bool = False) -> dict[str, Any]:
    """A letter as plain JSON: a summary for `list --json`, everything for `show --json`."""
    out: dict[str, Any] = {
        "id": str(LetterId.of(letter)),
        "partition": letter.record.partition,
        "offset": letter.record.offset,
        "timestamp_ms": letter.record.timestamp_ms,
        "reason": letter.reason,
        "error_class": letter.error_class,
        "message": letter.message,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "agent": letter.agent,
        "attempts": letter.attempts,
        "redrive_count": previous_redrives(letter.record.headers),
    }
    if full:
        value = letter.record.value
        out["headers"] = [[k, v.decode("utf-8", "replace")] for k, v in
                          _ordered(letter.record.headers)]
        out["key"] = None if letter.record.key is None else letter.record.key.decode(
            "utf-8", "replace")
        out["value_size"] = None if value is None else len(value)
        is_json, parsed = _json(value)
        out["value_json"] = parsed if is_json else None
        out["value_base64"] = (None if value is None or is_json
                               else base64.b64encode(value).decode())
    return out


def render_letter(letter: DeadLetter) -> RenderableType:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    head.add_row("id", f"{DEADLETTER_NAME}/{LetterId.of(letter)}")
    head.add_row("time", when(letter))
    headers = Table(title="headers", title_justify="left", box=None, header_style="bold",
                    pad_edge=False)
    headers.add_column("name", no_wrap=True)
    headers.add_column("value", overflow="fold")
    for k, v in _ordered(letter.record.headers):
        headers.add_row(escape(k), escape(v.decode("utf-8", "replace")))
    key = letter.record.key
    head.add_row("key", "(none)" if key is None else escape(repr(key)))
    return Group(head, Text(""), headers, Text(""), Text("value", style="bold"),
                 _render_value(letter.record.value))


def _render_value(value: bytes | None) -> RenderableType:
    if value is None:
        return Text("(none: a tombstone)")
    is_json, parsed = _json(value) if len(value) <= SHOW_MAX_BYTES else (False, None)
    if is_json:
        pretty = orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode()
        return Syntax(pretty, "json", word_wrap=True, theme="ansi_dark")
    more = "…" if len(value) > PREVIEW_BYTES else ""
    return Text(f"{len(value):,} bytes, starting {value[:PREVIEW_BYTES]!r}{more}")


def _json(value: bytes | None) -> tuple[bool, Any]:
    if value is None:
        return False, None
    try:
        return True, orjson.loads(value)
    except orjson.JSONDecodeError:
        return False, None


def _ordered(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """dlq.* headers first (why it is here), then the record's own, each in their order."""
    items = list(headers)
    return ([(k, v) for k, v in items if k.startswith(PREFIX)]
            + [(k, v) for k, v in items if not k.startswith(PREFIX)])


def _text_headers(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in headers}
