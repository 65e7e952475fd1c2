"""The SDK's spans at a fraction of their cost: what ``setup_telemetry`` installs.

Every record a Counterpoint process handles gets two spans (``process {topic}``, ``send
{topic}``), and tool and model calls get theirs, so the cost of one span is paid many thousand
times a second. The SDK's own ``Tracer.start_span`` spends most of it on generality this
process does not use: it asks the sampler through three calls, validates every attribute one by
one into a ``BoundedAttributes`` (a lock, a mapping proxy), allocates a bounded list and a lock
for events and links the span will mostly never have, and at the end copies the span into a new
``ReadableSpan`` for the processors. Those copies also keep far more objects alive until the
batch is exported, which the garbage collector then walks again and again.

:class:`LightTracerProvider` is the SDK's ``TracerProvider``: same processors, resource,
sampler, id generator, limits and tracer configuration. Its tracers only take a shorter path in
the configuration the SDK's defaults give (parent-based always-on sampling, or always-on; no
SDK self-metrics) and for what that path covers exactly:

* the sampling decision of those samplers (record and sample a root span or a child of a sampled
  parent, with the parent's trace state and the SDK's trace flags), made inline;
* attributes that are all plain values (str, bool, int, float under non-empty string keys,
  within the limits) kept in a plain dict, which is what ``BoundedAttributes`` would hold; any
  others, and every attribute set later, go through ``BoundedAttributes`` as in the SDK;
* events and links get their bounded lists on first use;
* an ended span is handed to the processors as itself: it refuses changes once ended, like the
  SDK's copy.

Anything else (links at start, an unsampled parent, another sampler, a disabled tracer) is the
SDK's own ``start_span``. :class:`LightSpan` is an SDK ``Span`` (``isinstance`` holds, and
``set_status``, ``record_exception``, ``add_event``, ``update_name``, ``__exit__`` are the SDK's
code), so processors, exporters (OTLP included) and the tests' in-memory exporters see the same
spans. tests/unit/test_spans.py checks that a light span and an SDK span of the same inputs
export alike.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, Span, Tracer, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

__all__ = ["LightSpan", "LightTracer", "LightTracerProvider", "QuickBatchSpanProcessor"]

# The SDK's logger, so its warnings (a span changed after it ended) read the same.
_sdk_log = logging.getLogger("opentelemetry.sdk.trace")

_FAST_SAMPLERS = (sampling.DEFAULT_ON, sampling.ALWAYS_ON)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | _RANDOM)
_UNSET = Status(StatusCode.UNSET)


class LightSpan(Span):
    """An SDK span built directly (see the module docstring); created only by LightTracer."""

    def __init__(self, tracer: Tracer, name: str, context: SpanContext,
                 parent: SpanContext | None, attributes: Any, kind: SpanKind,
                 record_exception: bool, set_status_on_exception: bool,
                 start_time: int) -> None:
        # Not Span.__init__: these are the fields it sets, with what it would set them to.
        self._name = name
        self._context: SpanContext = context
        self._kind = kind
        self._instrumentation_info = tracer.instrumentation_info
        self._instrumentation_scope = tracer._instrumentation_scope
        self._parent = parent
        self._start_time = start_time
        self._end_time: int | None = None
        self._attributes = attributes
        self._events: Any = ()  # a BoundedList once an event comes
        self._links: Any = ()
        self._resource = tracer.resource
        self._status = _UNSET
        self._sampler = tracer.sampler
        self._trace_config = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._span_processor = tracer.span_processor
        self._limits = tracer._span_limits
        self._lock = threading.Lock()
        self._record_end_metrics = None

    def get_span_context(self) -> SpanContext:
        return self._context  # the SDK's goes through typing.cast: a call per use

    def _bounded(self) -> BoundedAttributes:
        attributes = self._attributes
        if not isinstance(attributes, BoundedAttributes):
            attributes = BoundedAttributes(self._limits.max_span_attributes, attributes,
                                           immutable=False,
                                           max_value_len=self._limits.max_span_attribute_length)
            self._attributes = attributes
        return attributes

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        with self._lock:
            if self._end_time is not None:
                _sdk_log.warning("Setting attribute on ended span.")
                return
            self._bounded()._set_items(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        with self._lock:
            if self._end_time is not None:
                _sdk_log.warning("Setting attribute on ended span.")
                return
            self._bounded()[key] = value

    def _add_event(self, event: Any) -> None:
        with self._lock:
            if self._end_time is None:
                if not isinstance(self._events, BoundedList):
                    self._events = BoundedList(self._limits.max_events)
                self._events.append(event)
                return
        _sdk_log.warning("Tried calling %s on an ended span.", "_add_event")

    def _add_link(self, link: Any) -> None:
        with self._lock:
            if self._end_time is None:
                if not isinstance(self._links, BoundedList):
                    self._links = BoundedList(self._limits.max_links)
                self._links.append(link)
                return
        _sdk_log.warning("Tried calling %s on an ended span.", "_add_link")

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._end_time is not None:
                _sdk_log.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            attributes = self._attributes
            # type() first: isinstance of an abstract base class is a Python-level call.
            if type(attributes) is not dict and isinstance(attributes, BoundedAttributes):
                attributes._immutable = True
        processor = self._span_processor
        processor._on_ending(self)
        # Itself, not a copy: once ended it refuses every change, which is what the copy is for.
        processor.on_end(self)


_PLAIN_VALUES = frozenset({str, int, bool, float})
_STR = frozenset({str})


def _plain_attributes(attributes: Mapping[str, Any], limits: Any) -> Any:
    """`attributes` as the span will keep them: a plain copy when they are all plain values
    under non-empty string keys, within the limits (what BoundedAttributes would hold), else
    BoundedAttributes itself. The types are checked with `map`, in C: this runs for every
    span."""
    max_count = limits.max_span_attributes
    max_length = limits.max_span_attribute_length
    if (max_length is None and (max_count is None or len(attributes) <= max_count)
            and _PLAIN_VALUES.issuperset(map(type, attributes.values()))
            and _STR.issuperset(map(type, attributes)) and "" not in attributes):
        return dict(attributes)
    return BoundedAttributes(max_count, attributes, immutable=False, max_value_len=max_length)


class LightTracer(Tracer):
    """The SDK's Tracer, with a shorter `start_span` where it is exact (module docstring)."""

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Any = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        current = trace_api.get_current_span(context).get_span_context()
        if links or not self._tracer_config.is_enabled or not isinstance(current, SpanContext):
            return super().start_span(name, context, kind, attributes, links, start_time,
                                      record_exception, set_status_on_exception)
        parent: SpanContext | None = current
        # A tuple of six: unpacked once rather than read through four properties.
        trace_id, _, _, parent_flags, parent_state, valid = current
        trace_state = None
        if not valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
            flags = _SAMPLED_RANDOM if self.id_generator.is_trace_id_random() else _SAMPLED
        elif parent_flags & TraceFlags.SAMPLED or self.sampler is sampling.ALWAYS_ON:
            flags = _SAMPLED_RANDOM if parent_flags & _RANDOM else _SAMPLED
            trace_state = parent_state
        else:  # the sampler drops it: the SDK's non-recording span
            return super().start_span(name, context, kind, attributes, links, start_time,
                                      record_exception, set_status_on_exception)
        span_context = SpanContext(trace_id, self.id_generator.generate_span_id(),
                                   is_remote=False, trace_flags=flags, trace_state=trace_state)
        kept = _plain_attributes(attributes, self._span_limits) if attributes else {}
        span = LightSpan(self, name, span_context, parent, kept, kind, record_exception,
                         set_status_on_exception,
                         start_time if start_time is not None else time_ns())
        self.span_processor.on_start(span, parent_context=context)
        return span


def _light(tracer: Tracer) -> bool:
    """Whether `tracer` is in the configuration LightTracer is exact for."""
    try:
        from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
    except ImportError:  # another SDK version: keep its own tracer
        return False
    return (type(tracer) is Tracer
            and any(tracer.sampler is s for s in _FAST_SAMPLERS)
            and isinstance(getattr(tracer, "_tracer_metrics", None), NoOpTracerMetrics)
            and hasattr(tracer, "_tracer_config")
            and hasattr(tracer.span_processor, "_on_ending")
            and bool(_RANDOM))


class LightTracerProvider(TracerProvider):
    """The SDK's TracerProvider whose tracers are LightTracers when that is exact."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if isinstance(tracer, Tracer) and _light(tracer):
            # Same object, same state (the provider keeps updating its resource and
            # configuration); only start_span differs.
            tracer.__class__ = LightTracer
        return tracer


class QuickBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's BatchSpanProcessor, minus a system call per span.

    Its queueing step asks ``os.getpid()`` for every span, to notice a fork; a system call is
    costly (on the bench's VM, py-spy showed getpid at 5% of a traced hop's CPU), and the
    processor already re-creates its queue and worker in a forked child through
    ``os.register_at_fork``. So a span is queued here directly, exactly as the SDK queues it
    (newest on the left, the worker woken at a full batch); a full queue, a shut-down
    processor or another SDK layout take the SDK's own path, with its warnings and counts.
    Export, flush and shutdown are the SDK's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        batch = getattr(self, "_batch_processor", None)
        self._direct = (hasattr(os, "register_at_fork") and batch is not None
                        and all(hasattr(batch, name) for name in (
                            "_queue", "_shutdown", "_max_queue_size",
                            "_max_export_batch_size", "_worker_awaken")))

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if not (context and context.trace_flags.sampled):
            return
        batch = self._batch_processor
        if not self._direct or batch._shutdown:
            super().on_end(span)
            return
        queue = batch._queue
        if len(queue) >= batch._max_queue_size:
            super().on_end(span)  # the SDK drops it, and says so
            return
        queue.appendleft(span)
        if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
            batch._worker_awaken.set()
