"""W3C trace context in Kafka headers, and the spans the bus opens around each hop.

Span names and attributes follow the OpenTelemetry messaging conventions: `send {topic}`
(PRODUCER) and `process {topic}` (CONSUMER, wrapping the handler). Telemetry must never break
delivery, so header codec errors are swallowed: a record with a mangled `traceparent` is still
processed, in a new trace.

The bus's own path (`recording`, `Consuming`, `start_send`, `carry`) is built for one record
at a time in a hot loop: a process with no SDK installed records nothing and forwards the trace
headers it received (what the API's no-op spans would write anyway), and one with the SDK
starts spans with all their attributes at once, outside contextlib's generator machinery.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, MutableSequence, Sequence
from contextlib import contextmanager, suppress
from typing import Final

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME: Final = "counterpoint.bus"
REQUEST_ID_ATTR: Final = "counterpoint.request_id"
AGENT_ATTR: Final = "counterpoint.agent"
EVENT_ID_ATTR: Final = "counterpoint.event_id"
TRACE_HEADERS: Final = ("traceparent", "tracestate", "baggage")


class _HeaderGetter(Getter[Sequence[tuple[str, bytes]]]):
    def get(self, carrier: Sequence[tuple[str, bytes]], key: str) -> list[str] | None:
        values = [v.decode("utf-8", "replace") for k, v in carrier if k == key and v]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _HeaderSetter(Setter[MutableSequence[tuple[str, bytes]]]):
    def set(self, carrier: MutableSequence[tuple[str, bytes]], key: str, value: str) -> None:
        if any(k == key for k, _ in carrier):
            carrier[:] = [(k, v) for k, v in carrier if k != key]
        carrier.append((key, value.encode()))


class _DictGetter(Getter[dict[str, list[str]]]):
    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key)

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


_getter: Final = _HeaderGetter()
_setter: Final = _HeaderSetter()
_dict_getter: Final = _DictGetter()

# Whether the global propagator is plain W3C (trace context, optionally baggage), as
# setup_telemetry installs it and as the API's default is: then only the W3C headers matter,
# so a record's headers are read in one pass instead of once per field, and a span's own
# context is written directly. Any other propagator gets the generic path. Keyed by the
# global's identity, so installing another one later is noticed.
_w3c: tuple[object, bool] = (None, False)


def _is_w3c(propagator: object) -> bool:
    if isinstance(propagator, CompositePropagator):
        parts = getattr(propagator, "_propagators", None)
        return parts is not None and all(_is_w3c(p) for p in parts)
    return type(propagator) in (TraceContextTextMapPropagator, W3CBaggagePropagator)


def _plain_w3c() -> bool:
    global _w3c
    propagator = propagate.get_global_textmap()
    known, plain = _w3c
    if known is not propagator:
        plain = _is_w3c(propagator)
        _w3c = (propagator, plain)
    return plain


# The traceparent this bus writes (version 00, nothing after the flags), matched on the raw
# header: a record carrying only that needs neither decoding nor the propagators, which would
# build the same context (any other shape, and tracestate or baggage, takes their path).
_TRACEPARENT: Final = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def extract(headers: Sequence[tuple[str, bytes]]) -> Context:
    try:
        if _plain_w3c():
            traceparent: bytes | None = None
            generic = False
            for k, v in headers:
                if k in TRACE_HEADERS and v:
                    if k != "traceparent" or traceparent is not None:
                        generic = True
                        break
                    traceparent = v
            if traceparent is None and not generic:
                return Context()  # what the W3C propagators make of no trace headers
            if not generic and traceparent is not None:
                match = _TRACEPARENT.fullmatch(traceparent)
                if match is not None:
                    trace_id, span_id = int(match[1], 16), int(match[2], 16)
                    if trace_id and span_id:
                        remote = SpanContext(trace_id, span_id, is_remote=True,
                                             trace_flags=TraceFlags(int(match[3], 16)))
                        return trace.set_span_in_context(NonRecordingSpan(remote), Context())
            found: dict[str, list[str]] = {}
            for k, v in headers:
                if k in TRACE_HEADERS and v:
                    found.setdefault(k, []).append(v.decode("utf-8", "replace"))
            return propagate.extract(found, getter=_dict_getter)
        return propagate.extract(headers, getter=_getter)
    except Exception:
        return Context()


def inject(headers: MutableSequence[tuple[str, bytes]], ctx: Context | None = None) -> None:
    with suppress(Exception):
        propagate.inject(headers, context=ctx, setter=_setter)


def _inject_own(headers: list[tuple[str, bytes]], span: Span, base: Context | None) -> None:
    """Write `span`, current in `base` (None: in the current context), into `headers`, which
    hold no trace headers yet: `traceparent` formatted here when the propagator is plain W3C
    (what its trace-context half would write), baggage by the propagator itself when `base`
    has any (the span does not change the baggage of the context it is current in)."""
    try:
        if not _plain_w3c():
            propagate.inject(headers, context=trace.set_span_in_context(span, base),
                             setter=_setter)
            return
        # SpanContext is a tuple of these six: unpacked once rather than read through five
        # properties, for every span.
        trace_id, span_id, _, flags, state, valid = span.get_span_context()
        if not valid:
            return
        headers.append(("traceparent", b"00-%032x-%016x-%02x" % (trace_id, span_id, flags)))
        if state:
            headers.append(("tracestate", state.to_header().encode()))
        ctx = base if base is not None else otel_context.get_current()
        if _has_baggage(ctx):
            _baggage.inject(headers, context=ctx, setter=_setter)
    except Exception:  # telemetry never breaks delivery
        return


# Where the API keeps a context's baggage; looked up directly (a dict lookup) rather than
# through baggage.get_all, which wraps it in a read-only proxy, for every record.
_BAGGAGE_KEY: Final[str | None] = getattr(otel_baggage, "_BAGGAGE_KEY", None)


def _has_baggage(ctx: Context) -> bool:
    if _BAGGAGE_KEY is not None:
        return bool(ctx.get(_BAGGAGE_KEY))
    return bool(otel_baggage.get_all(ctx))


_baggage: Final = W3CBaggagePropagator()


# Module-level: get_tracer is costly per call with the SDK; the API's proxy tracer still
# follows a provider installed later, at process start.
_tracer: Final = trace.get_tracer(TRACER_NAME)


def tracer() -> trace.Tracer:
    return _tracer


def messaging_attributes(topic: str, *, partition: int | None = None, offset: int | None = None,
                         group: str | None = None) -> dict[str, str | int]:
    attrs: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
    }
    if partition is not None:
        attrs["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attrs["messaging.kafka.offset"] = offset
    if group is not None:
        attrs["messaging.consumer.group.name"] = group
    return attrs


@contextmanager
def process_span(topic: str, headers: Sequence[tuple[str, bytes]], *, partition: int,
                 offset: int, group: str, agent: str) -> Iterator[Span]:
    """The CONSUMER span around one record's handling, child of the producer's context."""
    parent = extract(headers)
    attrs = messaging_attributes(topic, partition=partition, offset=offset, group=group)
    attrs[AGENT_ATTR] = agent
    attrs["messaging.operation.type"] = "process"
    with tracer().start_as_current_span(
        f"process {topic}", context=parent, kind=SpanKind.CONSUMER, attributes=attrs
    ) as span:
        yield span


@contextmanager
def send_span(topic: str, *, parent: Context | None = None, request_id: str | None = None,
              event_id: str | None = None) -> Iterator[Span]:
    attrs = messaging_attributes(topic)
    attrs["messaging.operation.type"] = "send"
    if request_id:
        attrs[REQUEST_ID_ATTR] = request_id
    if event_id:
        attrs[EVENT_ID_ATTR] = event_id
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with tracer().start_as_current_span(
            f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs
        ) as span:
            yield span
    finally:
        if token is not None:
            otel_context.detach(token)


_NON_RECORDING: Final = (ProxyTracerProvider, NoOpTracerProvider)

TraceHeaders = tuple[tuple[str, bytes], ...]


_recording = False
_UNKNOWN: Final = object()


def recording() -> bool:
    """Whether this process has an SDK tracer provider (setup_telemetry installs one).

    Asked per record, so it reads the API's global instead of `get_tracer_provider()`, which
    looks up two environment variables on each call while no provider is installed.
    """
    global _recording
    if _recording:
        return True
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None:
        return False
    if provider is _UNKNOWN:  # an API version without that global
        provider = trace.get_tracer_provider()
    _recording = not isinstance(provider, _NON_RECORDING)
    if _recording:
        global _span_tracer
        # The installed provider's own tracer, which is what the proxy hands every call to.
        _span_tracer = trace.get_tracer(TRACER_NAME)
    return _recording


# What the bus's per-record spans start from: the proxy tracer until `recording` finds the
# provider (the global can be installed only once), then that provider's tracer directly,
# two calls fewer per span.
_span_tracer: trace.Tracer = _tracer


def forwarded(headers: Sequence[tuple[str, bytes]]) -> TraceHeaders:
    """A record's trace headers, to pass on unchanged from a process that records no spans."""
    return tuple((k, v) for k, v in headers if k in TRACE_HEADERS)


class Consuming:
    """The current CONSUMER span around one record's handling (a context manager).

    The span becomes current in the context extracted from the record, so the baggage it
    carried is current too and travels on with what the handler emits.
    """

    __slots__ = ("_parent", "_token", "span")

    def __init__(self, topic: str, headers: Sequence[tuple[str, bytes]],
                 attributes: dict[str, str | int]) -> None:
        self._parent = extract(headers)
        self.span: Span = _span_tracer.start_span(f"process {topic}", context=self._parent,
                                                  kind=SpanKind.CONSUMER, attributes=attributes)
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self.span, self._parent))
        return self.span

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]
        self.span.end()


class _Carried(tuple[tuple[str, bytes], ...]):
    """Trace headers `carry` wrote, with the context they were written from: emitting under
    them needs neither parsing them again nor a process-wide cache (one kept every context,
    and so its span, alive for thousands of records after its record was done)."""

    context: Context


def carry(span: Span) -> TraceHeaders:
    """`span`'s context as trace headers (what emits caused by it will be children of)."""
    current = otel_context.get_current()
    ctx = current if trace.get_current_span(current) is span else trace.set_span_in_context(span)
    headers: list[tuple[str, bytes]] = []
    _inject_own(headers, span, ctx)
    carried = _Carried(headers)
    carried.context = ctx
    return carried


def context_of(headers: TraceHeaders) -> Context:
    """The context emits under `headers` are children of: the one `carry` wrote them from,
    or what they say (headers kept elsewhere, e.g. an approval's)."""
    ctx: Context | None = getattr(headers, "context", None)
    return ctx if ctx is not None else extract(headers)


def start_send(topic: str, parent: Context | None, request_id: str, event_id: str) -> Span:
    """A PRODUCER span; the caller injects it (`inject_span`) and ends it once enqueued."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": "send",
        REQUEST_ID_ATTR: request_id,
        EVENT_ID_ATTR: event_id,
    }
    return _span_tracer.start_span(f"send {topic}", context=parent, kind=SpanKind.PRODUCER,
                                   attributes=attributes)


def inject_span(headers: list[tuple[str, bytes]], span: Span,
                parent: Context | None = None) -> None:
    """Write the context of `span`, a child of `parent` (None: the current context), into
    `headers`, which hold no trace headers yet."""
    _inject_own(headers, span, parent)
