"""Keep secrets and personal data out of spans and logs.

:func:`redact` replaces, in any text:

* email addresses -> ``[email]``;
* payment card numbers (13-19 digits, optionally grouped with single spaces or dashes, that
  pass the Luhn check) -> ``[card]``; digit runs that fail Luhn (ids, timestamps) are kept;
* bearer/basic credentials, ``sk-...``/``sk-ant-...`` API keys and ``api_key=...``,
  ``token: ...``, ``"password": "..."``-style key/value pairs -> ``[secret]``;
* in URLs, the userinfo (``https://user:pw@host`` -> ``https://[secret]@host``) and every
  query value, whatever its name (``/hook?auth=x&v=2`` -> ``/hook?auth=[secret]&v=[secret]``):
  a receiver's secret may sit in any of them. A ``url.query`` span attribute (the query alone,
  without ``?``) has its values replaced the same way.

It is idempotent: redacting redacted text changes nothing.

Two places apply it, so that every process is covered whatever it logs or traces:

* :class:`RedactingExporter` wraps the span exporter ``setup_telemetry`` installs (JSON lines or
  OTLP). Finished SDK spans are immutable, so it hands the real exporter redacted copies:
  attribute values, event attributes (``exception.message``/``exception.stacktrace`` included),
  link attributes, span names and status descriptions.
* :class:`RedactingFilter` on the root log handlers formats each record (``msg % args``), redacts
  the result and the exception/stack text, and leaves nothing for the handler to re-format.
  :func:`install_log_redaction` installs it, plus a log-record factory that redacts string
  arguments, the message and the exception text as records are made, which also covers loggers
  with handlers of their own (uvicorn's) that never reach the root handlers.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status

__all__ = [
    "RedactingExporter",
    "RedactingFilter",
    "attribute_dict",
    "install_log_redaction",
    "luhn_valid",
    "may_need_redaction",
    "redact",
    "redact_span",
    "redact_value",
]

EMAIL: Final = "[email]"
CARD: Final = "[card]"
SECRET: Final = "[secret]"

_EMAIL_RE = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
# 13-19 digits, single spaces or dashes between them, not glued to other letters or digits
# (so digit runs inside hex ids or longer numbers are not candidates).
_CARD_RE = re.compile(r"(?<![A-Za-z0-9])\d(?:[ -]?\d){12,18}(?![A-Za-z0-9])")
_AUTH_RE = re.compile(r"\b(Bearer|bearer|Basic|basic)\s+(?!\[secret\])[A-Za-z0-9._~+/=-]{8,}")
_API_KEY_RE = re.compile(r"(?<![A-Za-z0-9_-])sk-(?:ant-)?[A-Za-z0-9_-]{10,}")
_KV_RE = re.compile(
    r"(?i)(?<![A-Za-z0-9])"
    r"((?:x-)?api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token"
    r"|token|secret|client[_-]?secret|password|passwd|pwd)"
    r"(\"?\s*[=:]\s*\"?)"
    r"(?!\[secret\]|bearer\b|basic\b)([^\s&\"',;}\]]+)"
)


_USERINFO_RE = re.compile(r"(?<=://)[^/\s@?#\"'<>]+@")
# A query string runs from "?" to whitespace, a quote or "#"; each of its values goes.
_QUERY_RE = re.compile(r"\?[^\s\"'<>#`]*=[^\s\"'<>#`]*")
_PARAM_RE = re.compile(r"([?&][^=&]*=)[^&]*")
QUERY_ATTRIBUTES: Final = frozenset({"url.query"})


def _query(match: re.Match[str]) -> str:
    return _PARAM_RE.sub(lambda m: m.group(1) + SECRET, match.group(0))


# What any pattern above needs in a text to match: an "@" (email), "=" or ":" (key/value),
# 13 digits with at most single separators (card), "earer"/"asic" (Bearer, Basic), "sk-"
# (API keys); userinfo has its "@" and a query value its "=". One scan for these lets the
# exporter skip every substitution for almost every attribute (topic names, ids, offsets). A new
# pattern needs its trigger here too (tests/unit/test_redaction.py checks that every redaction
# was flagged).
_MAYBE_RE = re.compile(r"[@=:]|\d(?:[ -]?\d){12}|earer|asic|sk-")


def may_need_redaction(text: str) -> bool:
    return _MAYBE_RE.search(text) is not None


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return CARD if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def redact(text: str) -> str:
    """``text`` with emails, card numbers and credentials replaced by placeholders."""
    if not text or _MAYBE_RE.search(text) is None:
        return text
    return _substitute(text)


def _substitute(text: str) -> str:
    if "://" in text:  # before emails: `https://alice@example.com` is userinfo, not a mailbox
        text = _USERINFO_RE.sub(SECRET + "@", text)
    if "?" in text:
        text = _QUERY_RE.sub(_query, text)
    text = _AUTH_RE.sub(lambda m: f"{m.group(1)} {SECRET}", text)
    text = _API_KEY_RE.sub(SECRET, text)
    text = _KV_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{SECRET}", text)
    text = _EMAIL_RE.sub(EMAIL, text)
    return _CARD_RE.sub(_card, text)


def redact_value(value: Any) -> Any:
    """An attribute value with its strings redacted (str, or a list/tuple of them)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, tuple | list):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, Mapping):
        return {k: redact_value(v) for k, v in value.items()}
    return value


def _attribute(key: str, value: Any) -> Any:
    if key in QUERY_ATTRIBUTES and isinstance(value, str):
        value = redact("?" + value)[1:]
    return redact_value(value)


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _attribute(k, v) for k, v in (attributes or {}).items()}


class _RedactedSpan(ReadableSpan):
    """A redacted copy of a finished span that keeps the original's dropped counts."""

    def __init__(self, original: ReadableSpan) -> None:
        super().__init__(
            name=redact(original.name),
            context=original.get_span_context(),
            parent=original.parent,
            resource=original.resource,
            attributes=_attributes(original.attributes),
            events=[Event(e.name, _attributes(e.attributes), e.timestamp)
                    for e in original.events],
            links=[Link(link.context, _attributes(link.attributes)) for link in original.links],
            kind=original.kind,
            status=Status(original.status.status_code, redact(original.status.description)
                          if original.status.description else None),
            start_time=original.start_time,
            end_time=original.end_time,
            instrumentation_scope=original.instrumentation_scope,
        )
        self._original = original

    @property
    def dropped_attributes(self) -> int:
        return self._original.dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._original.dropped_events

    @property
    def dropped_links(self) -> int:
        return self._original.dropped_links


def _texts(value: Any, into: list[str]) -> None:
    """Collect the strings in an attribute value (str, or a list/tuple/mapping of them)."""
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, tuple | list):
        for v in value:
            _texts(v, into)
    elif isinstance(value, Mapping):
        for v in value.values():
            _texts(v, into)


def attribute_dict(item: Any) -> Mapping[str, Any]:
    """The attributes of a span, event or link, read without copying them.

    A finished SDK span hands out its attributes as a read-only proxy over BoundedAttributes,
    which looks every key up again through the Mapping mixin. Both keep a plain dict inside;
    reading that is several times cheaper, and this runs for every attribute of every span
    exported. Anything else falls back to the public property.
    """
    inner = getattr(item, "_attributes", None)
    if isinstance(inner, dict):
        return inner
    plain = getattr(inner, "_dict", None)
    if isinstance(plain, dict):
        return plain
    return item.attributes or {}


# Texts a span carried that the pre-check cleared. Most of a span's texts repeat from span to
# span (its name, topics, the agent, the group, the event type), so those are looked up here
# instead of scanned again; a text's verdict never changes. Bounded: emptied when full.
_clean: set[str] = set()
_CLEAN_MAX: Final = 8192
_CLEAN_LONGEST: Final = 200


def _span_may_need(span: ReadableSpan) -> bool:
    clean = _clean
    texts = [] if span.name in clean else [span.name]
    if span.status.description is not None:
        texts.append(span.status.description)
    for value in attribute_dict(span).values():
        if type(value) is str:
            if value not in clean:
                texts.append(value)
        else:
            _texts(value, texts)
    for event in span.events:
        for value in attribute_dict(event).values():
            _texts(value, texts)
    for link in span.links:
        for value in attribute_dict(link).values():
            _texts(value, texts)
    if not texts:
        return False
    # One search over all of them: no trigger can match across the NUL between two texts
    # (it is neither a digit, a separator, a letter nor a punctuation mark of one).
    if _MAYBE_RE.search("\x00".join(texts)) is not None:
        return True
    if len(clean) > _CLEAN_MAX:
        clean.clear()
    clean.update(t for t in texts if len(t) <= _CLEAN_LONGEST)
    return False


def redact_span(span: ReadableSpan) -> ReadableSpan:
    """The span with every text it carries redacted: a copy, or the span itself when no text
    in it could match (finished spans are immutable, so sharing it is safe)."""
    return _RedactedSpan(span) if _span_may_need(span) else span


class RedactingExporter(SpanExporter):
    """Hands the wrapped exporter redacted copies of the spans; never raises."""

    def __init__(self, delegate: SpanExporter) -> None:
        self.delegate = delegate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            redacted = [redact_span(s) for s in spans]
        except Exception:
            # Never export what could not be redacted.
            logging.getLogger(__name__).warning("could not redact %d span(s); dropped",
                                                len(spans), exc_info=True)
            return SpanExportResult.FAILURE
        return self.delegate.export(redacted)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.delegate.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.delegate.shutdown()


_formatter = logging.Formatter()


def _redact_record(record: logging.LogRecord, *, format_message: bool) -> None:
    if format_message:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            message = None
        if message is not None:
            record.msg, record.args = redact(message), ()
    else:
        # A format string is left alone while it has arguments: redacting "token=%s" would
        # break it (the handler's RedactingFilter sees the formatted message instead).
        if isinstance(record.msg, str) and not record.args:
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: redact(v) if isinstance(v, str) else v
                           for k, v in record.args.items()}
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        # logging.Formatter prints a record's cached exc_text rather than re-formatting.
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """Formats a record's message, redacts it and its exception text; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record, format_message=True)
        return True


_install_lock = threading.Lock()
_base_factory: Callable[..., logging.LogRecord] | None = None


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _base_factory is not None
    record = _base_factory(*args, **kwargs)
    # Arguments stay arguments: some formatters (uvicorn's access log) read them. Logging must
    # never fail because of redaction.
    with contextlib.suppress(Exception):
        _redact_record(record, format_message=False)
    return record


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every log record of this process; safe to call more than once.

    Adds a :class:`RedactingFilter` to the handlers of ``logger`` (the root logger by default)
    and a record factory that redacts records as they are made, for handlers elsewhere.
    """
    global _base_factory
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    with _install_lock:
        if _base_factory is None:
            _base_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_redacting_factory)


def uninstall_log_redaction() -> None:
    """Restore the record factory (tests); handler filters stay where they are."""
    global _base_factory
    with _install_lock:
        if _base_factory is not None:
            logging.setLogRecordFactory(_base_factory)
            _base_factory = None
