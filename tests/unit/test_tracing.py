"""bus/tracing.py's shortcuts give what the W3C propagators give."""

from __future__ import annotations

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from counterpoint.bus import tracing

W3C = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
TP = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def w3c() -> None:
    propagate.set_global_textmap(W3C)


def _view(ctx: Context) -> tuple[object, ...]:
    sc = trace.get_current_span(ctx).get_span_context()
    return (sc.trace_id, sc.span_id, sc.is_remote, int(sc.trace_flags), sc.trace_state.to_header(),
            sc.is_valid, dict(baggage.get_all(ctx)))


@pytest.mark.parametrize("headers", [
    [("traceparent", TP)],
    [("ce_id", b"x"), ("traceparent", TP.replace(b"-01", b"-00"))],
    [("traceparent", TP), ("tracestate", b"k=v")],
    [("traceparent", TP), ("baggage", b"tenant=acme")],
    [("traceparent", TP), ("traceparent", TP.replace(b"b7ad", b"c7ad"))],
    [("traceparent", TP.upper())],
    [("traceparent", b"ff" + TP[2:])],
    [("traceparent", b"01" + TP[2:] + b"-later")],
    [("traceparent", TP + b"-extra")],
    [("traceparent", b" " + TP)],
    [("traceparent", TP + b"\n")],
    [("traceparent", b"00-" + b"0" * 32 + TP[35:])],
    [("traceparent", TP[:36] + b"0" * 16 + b"-01")],
    [("traceparent", b"")],
    [("traceparent", b"garbage")],
    [("baggage", b"tenant=acme")],
    [],
])
def test_extract_is_the_propagators(headers: list[tuple[str, bytes]]) -> None:
    carrier = {}
    for k, v in headers:  # the propagators read the first value of each header
        carrier.setdefault(k, v.decode())
    assert _view(tracing.extract(headers)) == _view(W3C.extract(carrier, context=Context()))


def test_the_trace_headers_a_span_carries_include_its_baggage() -> None:
    ctx = tracing.extract([("traceparent", TP), ("baggage", b"tenant=acme")])
    span = trace.NonRecordingSpan(trace.get_current_span(ctx).get_span_context())
    headers: list[tuple[str, bytes]] = []
    tracing.inject_span(headers, span, ctx)
    assert dict(headers) == {"traceparent": TP, "baggage": b"tenant=acme"}
    headers = []
    tracing.inject_span(headers, span, tracing.extract([("traceparent", TP)]))
    assert dict(headers) == {"traceparent": TP}


def test_emits_under_carried_headers_are_children_of_the_span_they_came_from() -> None:
    span = trace.NonRecordingSpan(trace.SpanContext(0xA, 0xB, is_remote=False,
                                                    trace_flags=trace.TraceFlags(1)))
    carried = tracing.carry(span)
    assert carried == (("traceparent", f"00-{0xA:032x}-{0xB:016x}-01".encode()),)
    assert trace.get_current_span(tracing.context_of(carried)) is span
    # Headers kept as plain data (an approval's) say the same thing.
    again = tracing.context_of(tuple(carried))
    assert _view(again)[:2] == (0xA, 0xB)
