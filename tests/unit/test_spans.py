"""The light tracer (infra/spans.py) makes the spans the SDK's own tracer makes.

Each case runs the same calls through an SDK TracerProvider and a LightTracerProvider (same
resource, same in-memory exporter setup) and compares what the exporters received, field by
field, apart from the ids and times each span draws for itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from counterpoint.infra.spans import (
    LightSpan,
    LightTracer,
    LightTracerProvider,
    QuickBatchSpanProcessor,
)

RESOURCE = Resource.create({"service.name": "t"})
Scenario = Callable[[trace.Tracer], None]


def remote(sampled: bool = True, state: TraceState | None = None) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags, trace_state=state)
    return trace.set_span_in_context(NonRecordingSpan(parent), Context())


def _export(provider_type: type[TracerProvider], scenario: Scenario,
            **kwargs: Any) -> list[ReadableSpan]:
    provider = provider_type(resource=RESOURCE, **kwargs)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scenario(provider.get_tracer("t"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _view(span: ReadableSpan, ids: dict[int, int]) -> dict[str, Any]:
    """What must match; span ids as the index of the span among those exported."""
    context, parent = span.context, span.parent
    assert context is not None
    return {
        "name": span.name, "kind": span.kind,
        "trace_id": context.trace_id if parent else "root",
        "flags": int(context.trace_flags), "state": context.trace_state.to_header(),
        "remote": context.is_remote,
        "parent": (ids.get(parent.span_id, parent.span_id), parent.is_remote) if parent else None,
        "attributes": dict(span.attributes or {}), "dropped": span.dropped_attributes,
        "events": [(e.name, dict(e.attributes or {})) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(ids.get(link.context.span_id, link.context.span_id),
                   dict(link.attributes or {})) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource, "scope": span.instrumentation_scope,
        "ended": span.end_time is not None and span.start_time is not None
        and span.end_time >= span.start_time,
    }


def _views(spans: list[ReadableSpan]) -> list[dict[str, Any]]:
    ids = {s.context.span_id: i for i, s in enumerate(spans) if s.context is not None}
    return [_view(s, ids) for s in spans]


def assert_same(scenario: Scenario, **kwargs: Any) -> list[ReadableSpan]:
    sdk = _export(TracerProvider, scenario, **kwargs)
    light = _export(LightTracerProvider, scenario, **kwargs)
    assert _views(light) == _views(sdk)
    return light


ATTRS = {"messaging.system": "kafka", "messaging.kafka.offset": 3, "ok": True, "ratio": 0.5}


def test_a_process_span_with_a_child_and_a_send() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("process t", context=remote(), kind=SpanKind.CONSUMER,
                                          attributes=ATTRS):
            with tracer.start_as_current_span("tool x", attributes={"tool.name": "x"}) as tool:
                tool.set_attribute("tool.outcome", "ok")
                tool.set_attributes({"n": 2, "tags": ["a", "b"]})
            send = tracer.start_span("send u", kind=SpanKind.PRODUCER)
            send.end()

    spans = assert_same(scenario)
    assert all(isinstance(s, LightSpan) and isinstance(s, SdkSpan) for s in spans)
    assert spans[0].parent == spans[2].context  # the tool span is a child of the process span


def test_root_spans_and_trace_state() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        tracer.start_span("root").end()
        tracer.start_span("child", context=remote(state=TraceState([("k", "v")]))).end()

    assert_same(scenario)


def test_events_exceptions_statuses_and_names() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        span = tracer.start_span("work", attributes={"a": "b"})
        span.add_event("retry", {"attempt": 1, "error": "x"})
        span.record_exception(ValueError("bad"))
        span.set_status(Status(StatusCode.ERROR, "bad"))
        span.update_name("work done")
        span.add_link(SpanContext(1, 2, is_remote=True), {"why": "batch"})
        span.end()
        span.set_attribute("late", 1)  # refused once ended, as by the SDK
        span.add_event("late")
        span.end()
        with pytest.raises(KeyError), tracer.start_as_current_span("fails"):
            raise KeyError("k")

    spans = assert_same(scenario)
    assert spans[0].events[1].attributes is not None
    assert spans[0].events[1].attributes["exception.type"] == "ValueError"


def test_unusual_attributes_are_cleaned_as_by_the_sdk() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        tracer.start_span("s", attributes={"": "no key", "seq": [1, 2], "obj": object.__name__,
                                           "none": None, "b": b"x"}).end()
        tracer.start_span("many", attributes={f"k{i}": i for i in range(5)}).end()

    assert_same(scenario)
    assert_same(scenario, span_limits=SpanLimits(max_span_attributes=3,
                                                 max_span_attribute_length=2, max_events=1))


def test_what_the_light_path_does_not_cover_is_the_sdks() -> None:
    def scenario(tracer: trace.Tracer) -> None:
        tracer.start_span("links", links=[Link(SpanContext(1, 2, is_remote=True))]).end()
        dropped = tracer.start_span("unsampled parent", context=remote(sampled=False))
        assert not dropped.is_recording()
        dropped.end()

    spans = assert_same(scenario)
    assert [type(s) for s in spans] == [ReadableSpan]  # the SDK's own copy


def test_another_sampler_keeps_the_sdk_tracer() -> None:
    provider = LightTracerProvider(sampler=ParentBased(ALWAYS_OFF))
    assert not isinstance(provider.get_tracer("t"), LightTracer)
    assert isinstance(LightTracerProvider().get_tracer("t"), LightTracer)


def test_the_quick_batch_processor_exports_every_span_by_flush_and_shutdown() -> None:
    exporter = InMemorySpanExporter()
    processor = QuickBatchSpanProcessor(exporter, schedule_delay_millis=60_000,
                                        max_export_batch_size=4, max_queue_size=8)
    provider = LightTracerProvider(resource=RESOURCE)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for i in range(3):
        tracer.start_span(f"s{i}").end()
    tracer.start_span("unsampled parent", context=remote(sampled=False)).end()
    assert processor.force_flush()
    assert [s.name for s in exporter.get_finished_spans()] == ["s0", "s1", "s2"]
    for i in range(3, 20):  # more than the queue holds: the SDK path drops what overflows
        tracer.start_span(f"s{i}").end()
    tracer.start_span("last").end()
    provider.shutdown()  # what is queued is exported before the exporter shuts down
    names = [s.name for s in exporter.get_finished_spans()]
    assert names[:3] == ["s0", "s1", "s2"]
    assert len(names) == len(set(names))
    tracer.start_span("after shutdown").end()
    assert "after shutdown" not in [s.name for s in exporter.get_finished_spans()]
