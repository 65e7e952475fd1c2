"""Input limits in bus.decode: too large, too deep, not UTF-8 — each a clear, typed error."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from counterpoint.bus.decode import InputLimits, RawRecord, decode, json_depth
from counterpoint.bus.errors import DecodeError, SchemaError, TooDeep, TooLarge
from counterpoint.schemas.events import Ticket
from counterpoint.topics.registry import INTAKE_TICKETS, INVESTIGATION_FINDINGS


def _record(value: bytes, *, topic: str = "intake.tickets",
            headers: tuple[tuple[str, bytes], ...] = ()) -> RawRecord:
    return RawRecord(topic, 0, 3, b"T-1", value, headers, 1_795_000_000_000)


def _nested(depth: int, leaf: Any = 1) -> Any:
    """A value nesting `depth` containers, objects and arrays alternating."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def _ticket(**extra: Any) -> bytes:
    return orjson.dumps({"id": "T-1", "body": "my invoice is wrong", **extra})


# --- size -----------------------------------------------------------------------------------


def test_oversized_value_is_too_large_with_size_and_limit() -> None:
    value = _ticket(body="x" * (2 * 1024 * 1024))

    with pytest.raises(TooLarge) as caught:
        decode(INTAKE_TICKETS, _record(value))

    assert caught.value.reason == "too-large"
    message = str(caught.value)
    assert f"record is {len(value):,} bytes" in message
    assert "the limit is 1,048,576 (COUNTERPOINT_MAX_MESSAGE_BYTES)" in message


def test_size_is_checked_before_parsing() -> None:
    """Oversized garbage is too large, not undecodable: nothing was parsed."""
    with pytest.raises(TooLarge):
        decode(INTAKE_TICKETS, _record(b"\xff{not json" * 200_000))


def test_size_is_checked_before_the_envelope_headers() -> None:
    broken_envelope = (("ce_specversion", b"9.9"),)
    with pytest.raises(TooLarge):
        decode(INTAKE_TICKETS, _record(b"x" * 2_000_000, headers=broken_envelope))


def test_a_value_exactly_at_the_limit_passes() -> None:
    head = _ticket(pad="")
    value = _ticket(pad="p" * (1_048_576 - len(head)))
    assert len(value) == 1_048_576

    _, ticket = decode(INTAKE_TICKETS, _record(value))

    assert isinstance(ticket, Ticket)


def test_custom_size_limit_is_honoured() -> None:
    limits = InputLimits(max_bytes=100)
    decode(INTAKE_TICKETS, _record(_ticket()), limits)  # 45 bytes: fine

    with pytest.raises(TooLarge, match=r"record is 1\d\d bytes; the limit is 100 "):
        decode(INTAKE_TICKETS, _record(_ticket(pad="p" * 80)), limits)


# --- depth ----------------------------------------------------------------------------------


def test_depth_at_the_default_limit_passes_and_one_more_is_too_deep() -> None:
    # The ticket object itself is one level; `extra` adds the rest.
    _, ticket = decode(INTAKE_TICKETS, _record(_ticket(extra=_nested(31))))
    assert isinstance(ticket, Ticket)

    with pytest.raises(TooDeep) as caught:
        decode(INTAKE_TICKETS, _record(_ticket(extra=_nested(32))))

    assert caught.value.reason == "too-deep"
    assert str(caught.value) == ("JSON nests 33 levels deep; the limit is 32 "
                                 "(COUNTERPOINT_MAX_JSON_DEPTH)")


def test_forty_levels_is_too_deep() -> None:
    with pytest.raises(TooDeep, match="JSON nests 40 levels deep; the limit is 32"):
        decode(INTAKE_TICKETS, _record(orjson.dumps(_nested(40))))


@pytest.mark.parametrize("value", [
    b"[" * 2000 + b"]" * 2000,                      # valid JSON, beyond orjson's own limit
    b'{"a":' * 2000 + b"1" + b"}" * 2000,
    b"[" * 100_000,                                 # unterminated as well
], ids=["arrays", "objects", "unterminated"])
def test_json_deeper_than_orjson_allows_is_a_clear_too_deep(value: bytes) -> None:
    with pytest.raises(TooDeep) as caught:
        decode(INTAKE_TICKETS, _record(value))
    assert str(caught.value) == ("JSON nests more than 1024 levels deep; the limit is 32 "
                                 "(COUNTERPOINT_MAX_JSON_DEPTH)")


def test_depth_is_checked_before_the_schema() -> None:
    """A deep value on an internal topic is too deep, whatever its schema says."""
    with pytest.raises(TooDeep):
        decode(INVESTIGATION_FINDINGS, _record(orjson.dumps(_nested(40)), topic=(
            INVESTIGATION_FINDINGS.name), headers=_finding_headers()))


def test_custom_depth_limit_is_honoured() -> None:
    limits = InputLimits(max_depth=3)
    decode(INTAKE_TICKETS, _record(_ticket(extra={"a": [1]})), limits)

    with pytest.raises(TooDeep, match="JSON nests 4 levels deep; the limit is 3"):
        decode(INTAKE_TICKETS, _record(_ticket(extra={"a": [[1]]})), limits)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    _, ticket = decode(INTAKE_TICKETS, _record(_ticket(body="[{" * 5000)))
    assert isinstance(ticket, Ticket)


def test_a_large_flat_payload_within_limits_passes() -> None:
    extra = {f"field_{i}": f"value {i}" for i in range(20_000)}
    value = _ticket(**extra, tags=list(range(20_000)))
    assert len(value) < 1_048_576

    _, ticket = decode(INTAKE_TICKETS, _record(value))

    assert isinstance(ticket, Ticket)
    assert ticket.model_extra is not None and len(ticket.model_extra) == 20_001


def test_wide_but_shallow_json_passes() -> None:
    """Many containers side by side are not depth: 10,000 small objects in one array."""
    value = _ticket(items=[{"n": i, "tags": [i]} for i in range(10_000)])
    _, ticket = decode(INTAKE_TICKETS, _record(value))
    assert isinstance(ticket, Ticket)


@pytest.mark.parametrize(("value", "depth"), [
    (1, 0), ("s", 0), (None, 0), ({}, 1), ([], 1), ({"a": 1}, 1), ({"a": [1]}, 2),
    ([{"a": {}}, 1, [2]], 3), ([[], [[[]]], {}], 4),
])
def test_json_depth(value: Any, depth: int) -> None:
    assert json_depth(value) == depth


def test_json_depth_is_iterative() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(50_000):  # far beyond Python's recursion limit
        child: list[Any] = []
        node.append(child)
        node = child
    assert json_depth(deep) == 50_001


# --- text -----------------------------------------------------------------------------------


def test_non_utf8_value_says_so_and_where() -> None:
    value = '{"id": "T-é", "body": "é"}'.encode("latin-1")

    with pytest.raises(DecodeError) as caught:
        decode(INTAKE_TICKETS, _record(value))

    assert caught.value.reason == "undecodable"
    message = str(caught.value)
    assert "not valid UTF-8" in message
    assert "byte 10" in message and "e9" in message


def test_invalid_json_is_still_not_valid_json() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode(INTAKE_TICKETS, _record(b"{this is not json"))


def test_schema_errors_are_unchanged_within_limits() -> None:
    with pytest.raises(SchemaError, match="body"):
        decode(INTAKE_TICKETS, _record(orjson.dumps({"id": "T-1"})))


def _finding_headers() -> tuple[tuple[str, bytes], ...]:
    return (("ce_specversion", b"1.0"), ("ce_id", b"e-1"), ("ce_source", b"/test"),
            ("ce_type", INVESTIGATION_FINDINGS.ce_type.encode()))
