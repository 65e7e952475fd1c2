"""Redaction of emails, card numbers and credentials from text, spans and log records."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Status, StatusCode

from counterpoint.infra.redaction import (
    RedactingExporter,
    RedactingFilter,
    _substitute,
    install_log_redaction,
    luhn_valid,
    may_need_redaction,
    redact,
    redact_span,
    redact_value,
    uninstall_log_redaction,
)
from counterpoint.infra.telemetry import JsonlSpanExporter

CARD = "4242 4242 4242 4242"
EMAIL = "dana@example.com"
SECRETS = ("4242 4242 4242 4242", "4242424242424242", "dana@example.com", "sk-ant-api03")
TEXT = f"my card {CARD} and email {EMAIL}"


def assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, (secret, text)


# --- redact() ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("mail dana@example.com now", "mail [email] now"),
    ("a.b+tag@mail.example.co.uk", "[email]"),
    ("card 4242 4242 4242 4242.", "card [card]."),
    ("card 4242-4242-4242-4242", "card [card]"),
    ("card 4242424242424242", "card [card]"),
    ("amex 378282246310005", "amex [card]"),
    ("Authorization: Bearer abcdef123456789", "Authorization: Bearer [secret]"),
    ("key sk-ant-api03-abcdefghijkl_xyz here", "key [secret] here"),
    ("key sk-proj1234567890abcdef", "key [secret]"),
    # Every query value goes, whatever its name: `auth`, `sig` or `q` may all be secrets.
    ("GET /v1?api_key=abc123&q=1", "GET /v1?api_key=[secret]&q=[secret]"),
    ('"POST /v1/tickets?auth=gw-s3cret HTTP/1.1" 202',
     '"POST /v1/tickets?auth=[secret] HTTP/1.1" 202'),
    ("POST http://hook:pw@127.0.0.1:9/in?sig=abc", "POST http://[secret]@127.0.0.1:9/in?sig=[secret]"),
    ("see https://alice@example.com/x", "see https://[secret]@example.com/x"),
    ("token=abc.def", "token=[secret]"),
    ('{"password": "hunter2"}', '{"password": "[secret]"}'),
])
def test_redacts(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "id 1234567812345678",  # 16 digits, fails Luhn: an id, not a card
    "trace 0af7651916cd43dd8448eb211c80319c",
    "offset 4242424242424242x9",  # glued to letters: part of a longer token
    "2025-01-01T12:00:00.123456Z",
    "input_tokens=123 output_tokens=45 tokens: 5",
    "T-1042 from dana at example dot com",
    "the bearer of this note",
    "Why was I charged twice? And why=now",  # a question is not a query string
    "https://hooks.example/in",
])
def test_keeps_what_is_not_secret(text: str) -> None:
    assert redact(text) == text


def test_luhn() -> None:
    assert luhn_valid("4242424242424242")
    assert not luhn_valid("1234567812345678")


def test_idempotent() -> None:
    once = redact(TEXT + " Bearer abcdefghijkl api_key=xyz sk-ant-0123456789abc")
    assert redact(once) == once
    assert once == ("my card [card] and email [email] Bearer [secret] api_key=[secret] "
                    "[secret]")


def test_redact_value() -> None:
    assert redact_value(TEXT) == "my card [card] and email [email]"
    assert redact_value((EMAIL, "ok")) == ("[email]", "ok")
    assert redact_value([EMAIL]) == ["[email]"]
    assert redact_value(42) == 42
    assert redact_value(True) is True


# --- spans ---------------------------------------------------------------------------------


class Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: object) -> SpanExportResult:
        self.spans.extend(spans)  # type: ignore[call-overload]
        return SpanExportResult.SUCCESS


def emit_spans(*exporters: SpanExporter) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(exporter)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("process tickets") as span:
        span.set_attribute("ticket.body", TEXT)
        span.set_attribute("contacts", [EMAIL, "nobody"])
        span.set_attribute("count", 3)
        span.add_event("retry", {"error": f"ValueError('{TEXT}')", "attempt": 1})
        try:
            raise ValueError(f"1 validation error for Ticket: input_value='{TEXT}'")
        except ValueError as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
    provider.shutdown()


def test_exporter_writes_redacted_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    keep = Keep()
    emit_spans(JsonlSpanExporter(path), keep)

    text = path.read_text()
    assert_clean(text)
    assert "[card]" in text and "[email]" in text
    assert '"count":3' in text and '"attempt":1' in text

    (span,) = keep.spans
    assert span.attributes == {"ticket.body": "my card [card] and email [email]",
                               "contacts": ("[email]", "nobody"), "count": 3}
    events = {e.name: e.attributes for e in span.events}
    assert events["exception"] is not None
    assert "[card]" in str(events["exception"]["exception.message"])
    assert_clean(str(events["exception"]["exception.stacktrace"]))
    assert span.status.status_code is StatusCode.ERROR
    assert_clean(span.status.description or "")
    assert span.name == "process tickets"
    assert span.get_span_context() is not None


def test_url_attributes_lose_userinfo_and_query_values() -> None:
    keep = Keep()
    provider = TracerProvider(resource=Resource.create({"service.name": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(RedactingExporter(keep)))
    with provider.get_tracer("test").start_as_current_span("POST") as span:
        span.set_attribute("url.query", "auth=q-s3cret&v=1")
        span.set_attribute("url.full", "https://hook:pw-s3cret@hooks.example/in?auth=q-s3cret")
        span.set_attribute("url.path", "/in")
    provider.shutdown()
    (span,) = keep.spans
    assert span.attributes == {
        "url.query": "auth=[secret]&v=[secret]",
        "url.full": "https://[secret]@hooks.example/in?auth=[secret]", "url.path": "/in"}


def test_redacted_spans_encode_for_otlp() -> None:
    keep = Keep()
    emit_spans(keep)
    encoded = encode_spans(keep.spans).SerializeToString()
    for secret in SECRETS:
        assert secret.encode() not in encoded
    assert b"[card]" in encoded


# --- logs ----------------------------------------------------------------------------------


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test.redaction")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield log, out
    finally:
        log.removeHandler(handler)
        log.propagate = True


def test_filter_redacts_message_args_and_exception(
        logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger
    log.handlers[0].addFilter(RedactingFilter())
    # A card split across the format string and an argument is only seen once formatted.
    log.info("card 4242 4242 %s, email %s", "4242 4242", EMAIL)
    log.info("api_key=%s", "abc123")
    try:
        raise RuntimeError(TEXT)
    except RuntimeError:
        log.exception("failed for %r", {"token": "abc", "who": EMAIL})

    text = out.getvalue()
    assert_clean(text)
    assert "card [card], email [email]" in text
    assert "api_key=[secret]" in text
    assert "RuntimeError: my card [card] and email [email]" in text
    assert "Traceback" in text


def test_install_covers_handlers_that_are_not_the_roots(
        logger: tuple[logging.Logger, io.StringIO]) -> None:
    log, out = logger  # its own handler, no propagation: like uvicorn's loggers
    install_log_redaction(logging.getLogger("test.redaction.elsewhere"))
    install_log_redaction(logging.getLogger("test.redaction.elsewhere"))  # idempotent
    try:
        # uvicorn's access log: a token in a query parameter of any name must go.
        log.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1", "GET",
                 f"/x?email={EMAIL}&auth=gw-s3cret", "1.1", 200)
        log.info("token=%s for %s", "abc123", EMAIL)  # the format string still formats
        log.info(f"plain {EMAIL}")
        try:
            raise KeyError(CARD)
        except KeyError:
            log.warning("oops", exc_info=True)
    finally:
        uninstall_log_redaction()
    text = out.getvalue()
    assert_clean(text)
    assert 'GET /x?email=[secret]&auth=[secret] HTTP/1.1" 200' in text
    assert "gw-s3cret" not in text
    assert "KeyError: '[card]'" in text
    assert "token=abc123 for [email]" in text  # only the filter sees "token=" and its value
    assert "plain [email]" in text


# --- the cheap pre-check -----------------------------------------------------------------------

FRAGMENTS = ["dana@example.com", "@", "4242 4242 4242 4242", "378282246310005", "4242-4242",
             "Bearer abcdef123456789", "basic", "sk-ant-api03-abcdefghijkl", "api_key=abc",
             "token: x", '"password": "hunter2"', "pwd=", "=", ":", " ", "-", "a", "7", "é"]


@settings(max_examples=500)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join))
def test_every_redaction_is_flagged_by_the_pre_check(text: str) -> None:
    # The exporter skips texts the pre-check clears; a pattern it cannot see would leak.
    if _substitute(text) != text:
        assert may_need_redaction(text)


def test_spans_with_nothing_to_redact_are_exported_as_they_are() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
    clean = provider.get_tracer("t").start_span(
        "process intake.tickets", attributes={"messaging.kafka.offset": 3,
                                              "counterpoint.request_id": "5f0c2a1e-9a43"})
    clean.end()
    dirty = provider.get_tracer("t").start_span("process x", attributes={"note": TEXT})
    dirty.end()
    assert isinstance(clean, ReadableSpan) and isinstance(dirty, ReadableSpan)
    assert redact_span(clean) is clean
    copy = redact_span(dirty)
    assert copy is not dirty
    assert_clean(str(copy.attributes["note"]))
