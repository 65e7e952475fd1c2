"""OpenTelemetry setup for one Counterpoint process.

Every agent process calls :func:`setup_telemetry` once at start-up and
:meth:`Telemetry.shutdown` on SIGTERM/exit. One trace covers one request across all the
processes it touches; W3C ``traceparent``/``tracestate``/``baggage`` carry it between them.

Where spans go:

* When ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, they are
  sent with OTLP/HTTP to that collector; the exporter reads the other standard
  ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout, ...) itself.
* Otherwise they are written locally as JSON lines to
  ``$COUNTERPOINT_HOME/traces/<service.name>-<service.instance.id>.jsonl``
  (``COUNTERPOINT_HOME`` defaults to ``./.counterpoint``), one file per process so concurrent
  processes never interleave writes; files are created 0600, folders 0700.
  ``counterpoint trace REQUEST_ID`` reads that folder.

Each line is one span (the same shape ``counterpoint trace --json`` prints)::

    {"trace_id": "<32 hex>", "span_id": "<16 hex>", "parent_id": "<16 hex>" | null,
     "name": "process tickets", "kind": "CONSUMER", "service.name": "triage",
     "service.instance.id": "host-4242", "start": "2025-01-01T12:00:00.123456Z",
     "end": "...", "duration_ms": 1.5, "status": "OK" | "ERROR" | "UNSET",
     "attributes": {...}, "events": [{"name": ..., "time": ..., "attributes": {...}}]}

``OTEL_SERVICE_NAME`` overrides the service name a process passes in, as OTel specifies.
Telemetry never breaks the program: export failures are logged, never raised. Every exporter is
wrapped in :class:`~counterpoint.infra.redaction.RedactingExporter`, so emails, card numbers and
credentials in attributes, events, exception messages and statuses are redacted before export.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import orjson
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    Resource,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from counterpoint.agents.private_files import open_private_append, private_dir
from counterpoint.infra.redaction import RedactingExporter, attribute_dict
from counterpoint.infra.spans import LightTracerProvider, QuickBatchSpanProcessor

__all__ = [
    "JsonlSpanExporter",
    "Telemetry",
    "default_traces_dir",
    "process_resource",
    "setup_telemetry",
    "span_to_record",
]

log = logging.getLogger(__name__)

NAMESPACE = "counterpoint"
# Short enough that `counterpoint trace` sees a span right after it ends, long enough to batch.
SCHEDULE_DELAY_MS = 200
_NEWLINE: Final = orjson.OPT_APPEND_NEWLINE
_OTLP_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def default_traces_dir(home: Path) -> Path:
    """The folder local span files go to: ``$COUNTERPOINT_HOME/traces``."""
    return home / "traces"


_second: tuple[int, str] = (-1, "")


def format_time(ns: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2025-01-01T12:00:00.123456Z``."""
    global _second
    seconds, rest = divmod(ns, 1_000_000_000)
    cached_second, prefix = _second
    if seconds != cached_second:  # spans of one batch mostly share their second
        prefix = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (seconds, prefix)
    return f"{prefix}.{rest // 1000:06d}Z"


def _plain(item: Any) -> dict[str, Any]:
    """The attributes of a span or event as a dict for orjson, which writes the tuples OTel
    keeps sequences in as arrays: the span's own dict, not a copy (an ended span's attributes
    no longer change, and the record is serialized at once)."""
    attributes = attribute_dict(item)
    return attributes if type(attributes) is dict else dict(attributes)


_KIND: Final = {kind: kind.name for kind in SpanKind}
_STATUS: Final = {code: code.name for code in StatusCode}


_resource_names: tuple[object, Any, Any] = (None, None, None)


def _service(span: ReadableSpan) -> tuple[Any, Any]:
    """(service.name, service.instance.id) of the span's resource: one per process, so the
    last one is kept instead of being looked up for every span."""
    global _resource_names
    resource = span.resource
    cached, name, instance = _resource_names
    if cached is not resource:
        attributes = resource.attributes
        name, instance = attributes.get(SERVICE_NAME), attributes.get(SERVICE_INSTANCE_ID)
        _resource_names = (resource, name, instance)
    return name, instance


def span_to_record(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as the JSON-lines record described in the module docstring."""
    context = span.get_span_context()
    start = span.start_time or 0
    end = span.end_time or start
    name, instance = _service(span)
    parent = span.parent
    events = span.events
    kind = span.kind
    code = span.status.status_code
    # A SpanContext is a tuple (trace id, span id, ...): indexed, not read through properties.
    return {
        "trace_id": f"{context[0]:032x}" if context else "0" * 32,
        "span_id": f"{context[1]:016x}" if context else "0" * 16,
        "parent_id": f"{parent[1]:016x}" if parent else None,
        "name": span.name,
        "kind": _KIND.get(kind) or kind.name,
        "service.name": name,
        "service.instance.id": instance,
        "start": format_time(start),
        "end": format_time(end),
        "duration_ms": (end - start) / 1_000_000,
        "status": _STATUS.get(code) or code.name,
        "attributes": _plain(span),
        "events": [
            {"name": e.name, "time": format_time(e.timestamp), "attributes": _plain(e)}
            for e in events
        ] if events else [],
    }


class JsonlSpanExporter(SpanExporter):
    """Appends finished spans to one JSON-lines file; failures are logged, never raised."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._failing = False  # log the first failure of a streak loudly, not every batch

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            # One write per batch: a reader sees whole lines, except while a write is in flight.
            data = b"".join([orjson.dumps(span_to_record(s), default=str, option=_NEWLINE)
                             for s in spans])
            with self._lock:
                if self._file is None:
                    self._file = open_private_append(self.path)
                self._file.write(data)
                self._file.flush()
        except Exception:
            log.log(
                logging.DEBUG if self._failing else logging.WARNING,
                "could not write %d span(s) to %s",
                len(spans),
                self.path,
                exc_info=True,
            )
            self._failing = True
            return SpanExportResult.FAILURE
        self._failing = False
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every export already flushes

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    log.warning("could not close %s", self.path, exc_info=True)
                self._file = None


def _otlp_configured() -> bool:
    return any(os.environ.get(name) for name in _OTLP_ENV)


def _make_exporter(traces_file: Path) -> SpanExporter:
    if _otlp_configured():
        # Imported lazily: it pulls in protobuf and requests, which local runs never need.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return JsonlSpanExporter(traces_file)


class Telemetry:
    """The installed tracer provider of this process and where its spans go."""

    def __init__(
        self,
        provider: TracerProvider,
        *,
        service_name: str,
        instance_id: str,
        traces_file: Path | None,
    ) -> None:
        self.provider = provider
        self.service_name = service_name
        self.instance_id = instance_id
        self.traces_file = traces_file  # None when spans go to an OTLP collector
        self._lock = threading.Lock()
        self._closed = False

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name)

    def shutdown(self) -> None:
        """Flush pending spans and stop exporting; safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.provider.force_flush()
            self.provider.shutdown()
        except Exception:
            log.warning("telemetry shutdown failed", exc_info=True)


def process_resource(service_name: str, instance_id: str | None = None) -> Resource:
    """Who this process is, for its spans and its metrics alike (OTEL_SERVICE_NAME wins)."""
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    instance = instance_id or f"{socket.gethostname()}-{os.getpid()}"
    return Resource.create(
        {SERVICE_NAME: name, SERVICE_INSTANCE_ID: instance, SERVICE_NAMESPACE: NAMESPACE}
    )


def setup_telemetry(
    service_name: str, *, traces_dir: Path, instance_id: str | None = None
) -> Telemetry:
    """Build and install this process's global tracer provider and W3C propagators."""
    resource = process_resource(service_name, instance_id)
    name = str(resource.attributes[SERVICE_NAME])
    instance = str(resource.attributes[SERVICE_INSTANCE_ID])
    traces_file = traces_dir / _UNSAFE_FILENAME.sub("_", f"{name}-{instance}.jsonl")
    exporter = _make_exporter(traces_file)
    if isinstance(exporter, JsonlSpanExporter):
        try:
            private_dir(traces_dir)
        except OSError:
            log.warning("cannot create traces folder %s; spans will be lost", traces_dir)

    provider = LightTracerProvider(resource=resource)
    provider.add_span_processor(
        # Secrets and personal data never leave the process (see infra/redaction.py).
        QuickBatchSpanProcessor(RedactingExporter(exporter),
                                schedule_delay_millis=SCHEDULE_DELAY_MS)
    )
    trace.set_tracer_provider(provider)
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    local_file = traces_file if isinstance(exporter, JsonlSpanExporter) else None
    return Telemetry(provider, service_name=name, instance_id=instance, traces_file=local_file)
