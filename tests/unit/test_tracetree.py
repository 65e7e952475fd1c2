"""Reading span files and drawing a request's trace.

Spans here are real OTel SDK spans written by the real JSONL exporter. Each simulated process has
its own (non-global) tracer provider and file, the trace crosses them through a W3C carrier, and
span times are given explicitly so offsets and timeline bars are exact.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from counterpoint.infra.telemetry import JsonlSpanExporter
from counterpoint.infra.tracetree import (
    SpanRecord,
    load_spans,
    render_tree,
    scan_spans,
    spans_for_request,
    summarize,
    to_json_lines,
)

T0 = 1_700_000_000_000_000_000  # ns
W3C = TraceContextTextMapPropagator()


def at(ms: float) -> int:
    return T0 + int(ms * 1_000_000)


class FakeProcess:
    """One agent process: its own provider, resource and span file."""

    def __init__(self, traces: Path, service: str, instance: str) -> None:
        resource = Resource.create({SERVICE_NAME: service, SERVICE_INSTANCE_ID: instance})
        self.provider = TracerProvider(resource=resource)
        self.exporter = JsonlSpanExporter(traces / f"{service}-{instance}.jsonl")
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def span(
        self,
        name: str,
        start_ms: float,
        end_ms: float,
        *,
        parent: trace.Span | dict[str, str] | None = None,
        request_id: str | None = None,
        error: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> trace.Span:
        context: Context | None = None
        if isinstance(parent, dict):  # a carrier from another process
            context = W3C.extract(parent)
        elif parent is not None:
            context = trace.set_span_in_context(parent)
        attributes = {"counterpoint.request_id": request_id} if request_id else {}
        span = self.tracer.start_span(
            name, context=context, kind=kind, attributes=attributes, start_time=at(start_ms)
        )
        if error:
            span.set_status(Status(StatusCode.ERROR, "boom"))
        span.end(end_time=at(end_ms))
        return span

    def close(self) -> None:
        self.provider.shutdown()


def carrier_for(span: trace.Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    W3C.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    """req-1: intake (0-100 ms) fans out to billing and auth in parallel; req-2 is unrelated."""
    folder = tmp_path / "traces"
    intake = FakeProcess(folder, "intake", "host-101")
    billing = FakeProcess(folder, "billing", "host-202")
    auth = FakeProcess(folder, "auth", "host-303")

    root = intake.span("process intake.tickets", 0, 100, request_id="req-1", kind=SpanKind.CONSUMER)
    intake.span("send triage.tasks", 10, 30, parent=root, kind=SpanKind.PRODUCER)
    sent = carrier_for(root)
    # Created out of start order on purpose: the tree must sort by start.
    auth.span("process auth", 45, 80, parent=sent, request_id="req-1", kind=SpanKind.CONSUMER)
    bill = billing.span(
        "process billing", 40, 90, parent=sent, request_id="req-1", kind=SpanKind.CONSUMER
    )
    billing.span("lookup invoice", 50, 60, parent=bill, error=True)  # no request id attribute
    # A span whose parent's process never flushed: same trace, unknown parent span id.
    lost = SpanContext(
        trace_id=root.get_span_context().trace_id,
        span_id=0xDEADBEEF,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    auth.span("late retry", 95, 99, parent=NonRecordingSpan(lost))

    billing.span("process billing", 500, 520, request_id="req-2", kind=SpanKind.CONSUMER)
    for p in (intake, billing, auth):
        p.close()
    return folder


def render(spans: list[SpanRecord]) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(render_tree(spans))
    return console.export_text()


def test_load_spans_reads_every_file(traces: Path) -> None:
    scan = scan_spans(traces)
    assert scan.files == 3
    assert scan.skipped == 0
    assert len(scan.spans) == len(load_spans(traces)) == 7


def test_missing_folder_holds_no_spans(tmp_path: Path) -> None:
    assert load_spans(tmp_path / "nope") == []


def test_spans_for_request_takes_whole_trace_sorted(traces: Path) -> None:
    spans = spans_for_request(load_spans(traces), "req-1")
    assert [s.name for s in spans] == [
        "process intake.tickets",
        "send triage.tasks",
        "process billing",
        "process auth",
        "lookup invoice",
        "late retry",
    ]
    assert len({s.trace_id for s in spans}) == 1
    assert spans_for_request(load_spans(traces), "req-unknown") == []
    [other] = spans_for_request(load_spans(traces), "req-2")
    assert other.trace_id != spans[0].trace_id


def test_summarize(traces: Path) -> None:
    spans = spans_for_request(load_spans(traces), "req-1")
    summary = summarize(spans)
    assert summary.trace_ids == (spans[0].trace_id,)
    assert summary.span_count == 6
    assert summary.processes == (
        ("auth", "host-303"),
        ("billing", "host-202"),
        ("intake", "host-101"),
    )
    assert summary.duration_ms == pytest.approx(100.0)


def test_render_tree_layout(traces: Path) -> None:
    spans = spans_for_request(load_spans(traces), "req-1")
    lines = render(spans).splitlines()
    assert lines[0] == f"trace {spans[0].trace_id}  6 spans  3 processes  100.0 ms"

    def row(name: str) -> str:
        return next(line for line in lines if f"{name} " in line)

    assert "intake[101]" in row("process intake.tickets")
    assert "billing[202]" in row("process billing") and "auth[303]" in row("process auth")
    assert "+40.0 ms" in row("process billing") and "50.0 ms" in row("process billing")
    # Parallel work is visible: overlapping bars (100 ms over 24 columns).
    assert row("process billing").endswith("▕" + " " * 9 + "█" * 13 + "  ▏")
    assert row("process auth").endswith("▕" + " " * 10 + "█" * 10 + "    ▏")
    assert row("process intake.tickets").endswith("▕" + "█" * 24 + "▏")
    # Bars line up in one column whatever the depth.
    assert len({line.index("▕") for line in lines[1:]}) == 1
    # Nesting: billing's children under billing, billing and auth under intake, sorted by start.
    depth = {
        name: row(name).index(name)
        for name in ("process intake.tickets", "process billing", "process auth", "lookup invoice")
    }
    assert depth["process billing"] == depth["process auth"] == depth["process intake.tickets"] + 4
    assert depth["lookup invoice"] == depth["process billing"] + 4
    names_in_order = [
        n
        for line in lines
        for n in ("send triage", "process billing", "lookup invoice", "process auth")
        if n in line
    ]
    assert names_in_order == ["send triage", "process billing", "lookup invoice", "process auth"]
    assert "ERROR" in row("lookup invoice") and "ERROR" not in row("process billing")
    assert "(parent not recorded)" in row("late retry")
    assert "(parent not recorded)" not in row("process intake.tickets")


def _labels(tree: Tree) -> list[Text]:
    out: list[Text] = []
    for child in tree.children:
        assert isinstance(child.label, Text)
        out.append(child.label)
        out.extend(_labels(child))
    return out


def _style_of(label: Text, fragment: str) -> str:
    start = label.plain.index(fragment)
    return " ".join(str(s.style) for s in label.spans if s.start <= start < s.end)


def test_render_tree_colours(traces: Path) -> None:
    tree = render_tree(spans_for_request(load_spans(traces), "req-1"))
    assert isinstance(tree, Tree)
    labels = {label.plain.split("  ")[0]: label for label in _labels(tree)}
    assert "red" in _style_of(labels["lookup invoice"], "lookup invoice")
    assert "red" not in _style_of(labels["process billing"], "process billing")
    colour = {
        name: _style_of(labels[span], f"{name}[")
        for name, span in [
            ("intake", "process intake.tickets"),
            ("billing", "process billing"),
            ("auth", "process auth"),
        ]
    }
    assert len(set(colour.values())) == 3 and all(colour.values())
    assert _style_of(labels["late retry"], "auth[") == colour["auth"]


def test_render_empty() -> None:
    assert "no spans" in render([])


def test_to_json_lines_round_trips(traces: Path) -> None:
    spans = load_spans(traces)
    text = to_json_lines(spans)
    assert text.endswith("\n") and text.count("\n") == len(spans)
    again = [SpanRecord.from_dict(orjson.loads(line)) for line in text.splitlines()]
    assert again == spans
    on_disk = sorted(
        (
            orjson.loads(line)
            for p in traces.glob("*.jsonl")
            for line in p.read_bytes().split(b"\n")
            if line
        ),
        key=lambda r: r["span_id"],
    )
    assert (
        sorted((orjson.loads(x) for x in text.splitlines()), key=lambda r: r["span_id"]) == on_disk
    )


def test_torn_and_invalid_lines_are_skipped_and_counted(traces: Path) -> None:
    path = next(traces.glob("billing-*.jsonl"))
    whole = path.read_bytes()
    last = whole.splitlines()[-1]
    with path.open("ab") as f:
        f.write(b"[1, 2]\n")  # valid JSON, not a span
        f.write(b'{"trace_id": 5}\n')  # a span missing almost everything
        f.write(last[: len(last) // 2])  # a writer caught mid-line
    scan = scan_spans(traces)
    assert scan.skipped == 3
    assert len(scan.spans) == 7
    assert len(load_spans(traces)) == 7
