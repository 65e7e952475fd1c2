"""Reading span files and drawing a request's trace.

Spans here are real OTel SDK spans written by the real JSONL exporter. Each simulated process has
its own (non-global) tracer provider and file, the trace crosses them through a W3C carrier, and
span times are given explicitly so offsets and timeline bars are exact.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
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
from rich.cells import cell_len
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from counterpoint.infra.telemetry import JsonlSpanExporter
from counterpoint.infra.tracetree import (
    MAX_BAR_WIDTH,
    MIN_BAR_WIDTH,
    SpanRecord,
    TraceView,
    _fit_name,
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


def render(spans: list[SpanRecord], width: int = 120) -> str:
    console = Console(record=True, width=width, color_system=None)
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
    # Parallel work is visible: overlapping bars (100 ms over 40 columns, the widest bar).
    assert row("process billing").endswith("▕" + " " * 16 + "█" * 20 + " " * 4 + "▏")
    assert row("process auth").endswith("▕" + " " * 18 + "█" * 14 + " " * 8 + "▏")
    assert row("process intake.tickets").endswith("▕" + "█" * 40 + "▏")
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


def _style_of(label: Text, fragment: str) -> str:
    start = label.plain.index(fragment)
    return " ".join(str(s.style) for s in label.spans if s.start <= start < s.end)


def test_render_tree_colours(traces: Path) -> None:
    view = render_tree(spans_for_request(load_spans(traces), "req-1"))
    assert isinstance(view, TraceView)
    lines: list[Text] = view.lines(120)[1:]

    def row(name: str) -> Text:
        return next(line for line in lines if f" {name}  " in line.plain)

    assert "red" in _style_of(row("lookup invoice"), "lookup invoice")
    assert "red" in _style_of(row("lookup invoice"), "ERROR")
    assert "red" in _style_of(row("lookup invoice"), "█")
    assert "red" not in _style_of(row("process billing"), "process billing")
    colour = {
        name: _style_of(row(span), f"{name}[")
        for name, span in [
            ("intake", "process intake.tickets"),
            ("billing", "process billing"),
            ("auth", "process auth"),
        ]
    }
    assert len(set(colour.values())) == 3 and all(colour.values())
    assert _style_of(row("late retry"), "auth[") == colour["auth"]
    assert _style_of(row("process billing"), "█") == colour["billing"]
    # Only the tree guides are dim.
    assert "dim" in _style_of(row("process billing"), "├")
    assert "dim" not in _style_of(row("process billing"), "process billing")
    assert "dim" not in _style_of(row("process billing"), "billing[")


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


# -- fitting the console width ---------------------------------------------------------------

SERVICES = ("infrastructure", "knowledge", "synthesis", "billing", "account", "triage", "cli")


def _record(
    span_id: int,
    parent: int | None,
    name: str,
    service: str,
    start_ms: float,
    end_ms: float,
    *,
    status: str = "UNSET",
    pid: int = 5600,
) -> SpanRecord:
    origin = datetime(2024, 1, 1, tzinfo=UTC)
    return SpanRecord(
        trace_id="f267cb09b516e6d9af3a03c0a1850de8",
        span_id=f"{span_id:016x}",
        parent_id=None if parent is None else f"{parent:016x}",
        name=name,
        kind="INTERNAL",
        service_name=service,
        instance_id=f"ip-10-0-12-34-{pid}",
        start=origin + timedelta(milliseconds=start_ms),
        end=origin + timedelta(milliseconds=end_ms),
        duration_ms=end_ms - start_ms,
        status=status,
    )


def deep_trace(depth: int = 7) -> list[SpanRecord]:
    """A chain ``depth`` spans deep, each level in another process with a long span name, plus
    a sibling at every level, an error deep down and an orphan whose parent never flushed."""
    spans: list[SpanRecord] = []
    parent: int | None = None
    for level in range(depth):
        service = SERVICES[level % len(SERVICES)]
        span_id = 100 + level
        spans.append(
            _record(
                span_id,
                parent,
                f"process investigation.tasks.{service}.level{level}",
                service,
                level * 10,
                1000 - level * 10,
                status="ERROR" if level == depth - 1 else "UNSET",
                pid=5670 + level,
            )
        )
        if parent is not None:
            spans.append(
                _record(
                    200 + level,
                    parent,
                    f"send investigation.findings.{service}",
                    service,
                    500 + level,
                    520 + level,
                    pid=5670 + level,
                )
            )
        parent = span_id
    spans.append(_record(999, 12345, "late retry of a lost delivery", "billing", 990, 1000))
    return spans


def _process(span: SpanRecord) -> str:
    return f"{span.service_name}[{span.instance_id.rsplit('-', 1)[-1]}]"


@pytest.mark.parametrize("width", [80, 100, 120, 160, 200])
def test_one_line_per_span_at_any_width(width: int) -> None:
    spans = deep_trace()
    lines = render(spans, width=width).splitlines()
    assert len(lines) == len(spans) + 1  # the header and one line per span, nothing wrapped
    assert all(cell_len(line) <= width for line in lines)
    assert lines[0].startswith("trace f267cb09b516e6d9af3a03c0a1850de8  14 spans  8 processes")
    rows = lines[1:]
    # Every line keeps its whole process label, its timing and its timeline bar.
    by_start = sorted(spans, key=lambda s: s.start)
    for span in by_start:
        offset = f"+{(span.start - by_start[0].start).total_seconds() * 1000:.1f} ms"
        assert any(_process(span) in row and offset in row and row.endswith("▏") for row in rows), (
            span.name,
            width,
        )
    assert all(any(_process(s) in row for s in spans) for row in rows)
    # Columns line up whatever the depth; the bar stays between its narrowest and widest.
    assert len({row.index("▕") for row in rows}) == 1
    bar = rows[0].index("▏") - rows[0].index("▕") - 1
    assert MIN_BAR_WIDTH <= bar <= MAX_BAR_WIDTH
    assert sum("ERROR" in row for row in rows) == 1
    assert sum("(parent not recorded)" in row for row in rows) == 1


def test_wide_console_shows_whole_names_and_a_wide_bar() -> None:
    spans = deep_trace()
    text = render(spans, width=160)
    for span in spans:
        assert span.name in text
    rows = text.splitlines()[1:]
    assert rows[0].index("▏") - rows[0].index("▕") - 1 == MAX_BAR_WIDTH
    # Full-width guides: each level indents by four columns.
    first = [next(r for r in rows if f"level{n} " in r) for n in range(7)]
    indents = [r.index("process") for r in first]
    assert indents == [4 * (n + 1) for n in range(7)]


def test_narrow_console_shortens_names_before_processes() -> None:
    spans = deep_trace()
    text = render(spans, width=80)
    rows = text.splitlines()[1:]
    assert rows[0].index("▏") - rows[0].index("▕") - 1 == MIN_BAR_WIDTH
    # Names lose the middle of dotted parts (then get cut) rather than the process label.
    assert "process i." in text
    assert all(_process(s) in text for s in spans)
    # The deepest span is still drawn under its parent, one (narrower) level further in.
    deepest = next(r for r in rows if "ERROR" in r)
    parent = next(r for r in rows if "triage[5675]" in r)
    assert rows.index(deepest) == rows.index(parent) + 1
    assert deepest.index("process") - parent.index("process") in (2, 3, 4)


def test_piped_output_fits_eighty_columns(traces: Path) -> None:
    """Without a terminal rich assumes 80 columns: the trace must fit that too."""
    spans = spans_for_request(load_spans(traces), "req-1")
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None)
    console.print(render_tree(spans))
    lines = out.getvalue().splitlines()
    assert len(lines) == len(spans) + 1
    assert all(cell_len(line) <= 80 for line in lines)


def test_very_deep_trace_still_one_line_per_span() -> None:
    spans = deep_trace(depth=16)
    for width in (80, 120):
        lines = render(spans, width=width).splitlines()
        assert len(lines) == len(spans) + 1
        assert all(cell_len(line) <= width for line in lines)


def test_fits_inside_a_panel() -> None:
    spans = deep_trace()
    console = Console(record=True, width=80, color_system=None)
    console.print(Panel(render_tree(spans)))
    lines = console.export_text().splitlines()
    assert len(lines) == len(spans) + 1 + 2  # the panel's top and bottom borders
    assert all(cell_len(line) <= 80 for line in lines)


def test_wide_characters_are_measured_in_cells() -> None:
    spans = [
        _record(1, None, "処理 請求書の確認.タスク.とても長い名前のスパン", "billing", 0, 10),
        _record(2, 1, "送信 結果.合成.さらに長い名前のスパンです", "synthesis", 2, 8, pid=5676),
    ]
    lines = render(spans, width=80).splitlines()
    assert len(lines) == 3
    assert all(cell_len(line) <= 80 for line in lines)
    assert "billing[5600]" in lines[1] and "synthesis[5676]" in lines[2]


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (60, "process investigation.tasks.infrastructure"),
        (40, "process i.tasks.infrastructure"),
        (26, "process i.t.infrastructure"),
        (20, "process i.t.infrast…"),
        (1, "…"),
        (0, ""),
    ],
)
def test_fit_name(budget: int, expected: str) -> None:
    assert _fit_name("process investigation.tasks.infrastructure", budget) == expected
