"""Read local span files and draw one request's trace as a tree across processes.

The input is the JSON-lines folder written by :mod:`counterpoint.infra.telemetry` (one file per
process); the record shape is documented there and is also what ``counterpoint trace --json``
prints. Files may be mid-write while we read them, so torn or invalid lines are skipped and
counted, never fatal.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.text import Text

from counterpoint.infra.terminal import json_line

__all__ = [
    "REQUEST_ID_ATTRIBUTE",
    "EventRecord",
    "SpanRecord",
    "SpanScan",
    "TraceSummary",
    "TraceView",
    "load_spans",
    "render_tree",
    "scan_spans",
    "spans_for_request",
    "summarize",
    "to_json_lines",
]

log = logging.getLogger(__name__)

REQUEST_ID_ATTRIBUTE = "counterpoint.request_id"
MIN_BAR_WIDTH = 10  # timeline columns on narrow consoles
MAX_BAR_WIDTH = 40  # timeline columns on wide consoles
_SEP = "  "
# Tree guides by columns per level, widest first: (tee, corner, pipe, blank).
_GUIDES: dict[int, tuple[str, str, str, str]] = {
    4: ("├── ", "└── ", "│   ", "    "),
    3: ("├─ ", "└─ ", "│  ", "   "),
    2: ("├╴", "└╴", "│ ", "  "),
}
_PALETTE = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
    "bright_yellow",
    "bright_blue",
)


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _str(record: Mapping[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _attributes(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("attributes must be an object")
    return value


@dataclass(frozen=True)
class EventRecord:
    name: str
    time: datetime
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpanRecord:
    """One span as recorded in a local span file."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service_name: str
    instance_id: str
    start: datetime
    end: datetime
    duration_ms: float
    status: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    events: tuple[EventRecord, ...] = ()

    @property
    def process(self) -> tuple[str, str]:
        return (self.service_name, self.instance_id)

    @property
    def is_error(self) -> bool:
        return self.status == "ERROR"

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SpanRecord:
        """Parse one record; raises ``ValueError``/``KeyError``/``TypeError`` when malformed."""
        parent = record.get("parent_id")
        if parent is not None and not isinstance(parent, str):
            raise ValueError("parent_id must be a string or null")
        duration = record["duration_ms"]
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise ValueError("duration_ms must be a number")
        events = record.get("events") or []
        if not isinstance(events, list):
            raise ValueError("events must be a list")
        return cls(
            trace_id=_str(record, "trace_id"),
            span_id=_str(record, "span_id"),
            parent_id=parent,
            name=_str(record, "name"),
            kind=_str(record, "kind"),
            service_name=str(record.get("service.name") or "unknown_service"),
            instance_id=str(record.get("service.instance.id") or ""),
            start=_parse_time(record["start"]),
            end=_parse_time(record["end"]),
            duration_ms=float(duration),
            status=_str(record, "status"),
            attributes=_attributes(record.get("attributes", {})),
            events=tuple(
                EventRecord(
                    name=_str(e, "name"),
                    time=_parse_time(e["time"]),
                    attributes=_attributes(e.get("attributes", {})),
                )
                for e in events
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "name": self.name,
            "kind": self.kind,
            "service.name": self.service_name,
            "service.instance.id": self.instance_id,
            "start": _format_time(self.start),
            "end": _format_time(self.end),
            "duration_ms": self.duration_ms,
            "status": self.status,
            "attributes": dict(self.attributes),
            "events": [
                {"name": e.name, "time": _format_time(e.time), "attributes": dict(e.attributes)}
                for e in self.events
            ],
        }


@dataclass(frozen=True)
class SpanScan:
    spans: list[SpanRecord]
    skipped: int  # torn or invalid lines
    files: int


def scan_spans(traces_dir: Path) -> SpanScan:
    """Read every ``*.jsonl`` file in ``traces_dir``; a missing folder holds no spans."""
    spans: list[SpanRecord] = []
    skipped = 0
    paths = sorted(traces_dir.glob("*.jsonl")) if traces_dir.is_dir() else []
    for path in paths:
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            log.warning("cannot read span file %s", path, exc_info=True)
            continue
        for line in lines:
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
                spans.append(SpanRecord.from_dict(record))
            except (ValueError, KeyError, TypeError):
                skipped += 1
    return SpanScan(spans=spans, skipped=skipped, files=len(paths))


def load_spans(traces_dir: Path) -> list[SpanRecord]:
    """All readable spans in ``traces_dir``; see :func:`scan_spans` for the skipped count."""
    scan = scan_spans(traces_dir)
    if scan.skipped:
        log.debug("skipped %d torn or invalid span line(s) in %s", scan.skipped, traces_dir)
    return scan.spans


def _by_start(spans: Iterable[SpanRecord]) -> list[SpanRecord]:
    return sorted(spans, key=lambda s: (s.start, s.end, s.span_id))


def spans_for_request(spans: Iterable[SpanRecord], request_id: str) -> list[SpanRecord]:
    """Every span of every trace that some span tags with ``request_id``, sorted by start."""
    spans = list(spans)
    trace_ids = {s.trace_id for s in spans if s.attributes.get(REQUEST_ID_ATTRIBUTE) == request_id}
    return _by_start(s for s in spans if s.trace_id in trace_ids)


@dataclass(frozen=True)
class TraceSummary:
    trace_ids: tuple[str, ...]
    span_count: int
    processes: tuple[tuple[str, str], ...]  # (service.name, service.instance.id), sorted
    duration_ms: float
    start: datetime | None
    end: datetime | None


def summarize(spans: Sequence[SpanRecord]) -> TraceSummary:
    if not spans:
        return TraceSummary((), 0, (), 0.0, None, None)
    start = min(s.start for s in spans)
    end = max(s.end for s in spans)
    return TraceSummary(
        trace_ids=tuple(sorted({s.trace_id for s in spans})),
        span_count=len(spans),
        processes=tuple(sorted({s.process for s in spans})),
        duration_ms=(end - start).total_seconds() * 1000,
        start=start,
        end=end,
    )


def to_json_lines(spans: Iterable[SpanRecord]) -> str:
    """One JSON object per line, the same shape as the span files."""
    return "".join(json_line(s.to_dict()) for s in spans)


def _ms(moment: datetime, origin: datetime) -> float:
    return (moment - origin).total_seconds() * 1000


def _format_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if abs(ms) >= 1000 else f"{ms:.1f} ms"


def _bar(span: SpanRecord, origin: datetime, total_ms: float, width: int) -> str:
    if total_ms <= 0:
        return "▕" + "█" * width + "▏"
    first = min(int(_ms(span.start, origin) / total_ms * width), width - 1)
    last = min(max(math.ceil(_ms(span.end, origin) / total_ms * width), first + 1), width)
    return "▕" + " " * first + "█" * (last - first) + " " * (width - last) + "▏"


def _short_instance(instance_id: str) -> str:
    # Instance ids are "<host>-<pid>" (or a UUID); the last part tells processes apart.
    return instance_id.rsplit("-", 1)[-1][:8]


def _abbreviations(name: str) -> Iterator[str]:
    """Ever shorter forms of ``name``: the non-final parts of dotted words cut to one letter,
    left to right (``process investigation.tasks.billing`` -> ``process i.t.billing``)."""
    words = [word.split(".") for word in name.split(" ")]
    for parts in words:
        for i in range(len(parts) - 1):
            if len(parts[i]) > 1:
                parts[i] = parts[i][0]
                yield " ".join(".".join(p) for p in words)


def _fit_name(name: str, budget: int) -> str:
    """``name`` in at most ``budget`` cells: whole if it fits, else with its middle parts
    abbreviated, else the most abbreviated form cut with an ellipsis."""
    if cell_len(name) <= budget:
        return name
    shortest = name
    for candidate in _abbreviations(name):
        if cell_len(candidate) <= budget:
            return candidate
        shortest = candidate
    if budget <= 0:
        return ""
    text = Text(shortest)
    text.truncate(budget, overflow="ellipsis")
    return text.plain


def _shortest(name: str) -> str:
    """The most abbreviated form of ``name`` that :func:`_fit_name` tries before cutting it."""
    return min((name, *_abbreviations(name)), key=cell_len)


@dataclass(frozen=True)
class _Row:
    span: SpanRecord
    lineage: tuple[bool, ...]  # per ancestor level below the header: was that ancestor last?
    last: bool  # last among its siblings
    orphan: bool  # has a parent id that no recorded span carries

    @property
    def depth(self) -> int:
        return len(self.lineage) + 1

    def prefix(self, guide: int) -> str:
        tee, corner, pipe, blank = _GUIDES[guide]
        return "".join(blank if done else pipe for done in self.lineage) + (
            corner if self.last else tee
        )


@dataclass(frozen=True)
class _Layout:
    guide: int  # columns per tree level
    left: int  # columns of the guide + name + process column
    bar: int  # columns inside the timeline bar's end marks


class TraceView:
    """A trace drawn as a tree, one line per span, sized to the width it is printed at.

    Each line is the tree guide, span name, process ``service[instance]`` and any markers, then
    the start offset, the duration and a timeline bar, all in aligned columns. When the console
    is too narrow for that, the bar shrinks (to ``MIN_BAR_WIDTH``), then the tree guides narrow,
    then span names lose the middle of dotted parts and finally get cut with an ellipsis; the
    process label and the timing columns stay whole. On wide consoles the bar grows up to
    ``MAX_BAR_WIDTH``.
    """

    def __init__(self, spans: Sequence[SpanRecord]) -> None:
        self.spans = _by_start(spans)
        self.summary = summarize(self.spans)
        self.origin = self.summary.start or datetime.now(UTC)
        self.colours = {
            name: _PALETTE[i % len(_PALETTE)]
            for i, name in enumerate(sorted({s.service_name for s in self.spans}))
        }
        self.rows = self._rows()
        self.offsets = ["+" + _format_ms(_ms(r.span.start, self.origin)) for r in self.rows]
        self.durations = [_format_ms(r.span.duration_ms) for r in self.rows]
        self.offset_width = max(map(len, self.offsets), default=0)
        self.duration_width = max(map(len, self.durations), default=0)

    def _rows(self) -> list[_Row]:
        known = {(s.trace_id, s.span_id) for s in self.spans}
        children: dict[tuple[str, str], list[SpanRecord]] = defaultdict(list)
        roots: list[SpanRecord] = []
        for s in self.spans:
            if s.parent_id is not None and (s.trace_id, s.parent_id) in known:
                children[(s.trace_id, s.parent_id)].append(s)
            else:
                roots.append(s)

        def reach(start: SpanRecord) -> None:
            stack = [start]
            while stack:
                span = stack.pop()
                if id(span) not in reached:
                    reached.add(id(span))
                    stack.extend(children[(span.trace_id, span.span_id)])

        reached: set[int] = set()
        for s in roots:
            reach(s)
        # Spans in a parent cycle are unreachable from any root: show one per cycle at the top.
        for s in self.spans:
            if id(s) not in reached:
                roots.append(s)
                reach(s)

        rows: list[_Row] = []
        claimed = {id(s) for s in roots}
        stack: list[tuple[SpanRecord, tuple[bool, ...], bool]] = [
            (s, (), i == len(roots) - 1) for i, s in reversed(list(enumerate(roots)))
        ]
        while stack:
            span, lineage, last = stack.pop()
            orphan = span.parent_id is not None and (span.trace_id, span.parent_id) not in known
            rows.append(_Row(span, lineage, last, orphan))
            kids = [c for c in children[(span.trace_id, span.span_id)] if id(c) not in claimed]
            claimed.update(id(c) for c in kids)
            stack.extend(
                (c, (*lineage, last), i == len(kids) - 1)
                for i, c in reversed(list(enumerate(kids)))
            )
        return rows

    # -- pieces of a line ------------------------------------------------------------------

    @staticmethod
    def _process(span: SpanRecord) -> str:
        return f"{span.service_name}[{_short_instance(span.instance_id)}]"

    @staticmethod
    def _markers(row: _Row) -> list[tuple[str, str]]:
        markers: list[tuple[str, str]] = []
        if row.span.is_error:
            markers.append(("ERROR", "bold red"))
        if row.orphan:
            markers.append(("(parent not recorded)", "dim"))
        return markers

    def _fixed_width(self) -> int:
        """Columns of everything right of the name column but the bar's inside."""
        return 3 * len(_SEP) + self.offset_width + self.duration_width + 2

    def _cell_width(self, row: _Row, guide: int, name: str) -> int:
        width = row.depth * guide + (cell_len(name) + len(_SEP) if name else 0)
        width += cell_len(self._process(row.span))
        return width + sum(len(_SEP) + cell_len(m) for m, _ in self._markers(row))

    def _name_budget(self, row: _Row, guide: int, left: int) -> int:
        return left - self._cell_width(row, guide, "") - len(_SEP)

    def natural_left(self) -> int:
        """Columns the name column needs with wide guides and whole names."""
        return max((self._cell_width(r, 4, r.span.name) for r in self.rows), default=0)

    def layout(self, width: int) -> _Layout:
        fixed = self._fixed_width()
        natural = self.natural_left()
        if natural + fixed + MIN_BAR_WIDTH <= width:
            return _Layout(4, natural, min(width - fixed - natural, MAX_BAR_WIDTH))
        left = width - fixed - MIN_BAR_WIDTH
        # Narrow the guides only when abbreviating name parts is not enough at the wider ones.
        guide = next(
            (
                g
                for g in _GUIDES
                if all(self._cell_width(r, g, _shortest(r.span.name)) <= left for r in self.rows)
            ),
            min(_GUIDES),
        )
        used = (
            max(
                min(
                    self._cell_width(
                        r, guide, _fit_name(r.span.name, self._name_budget(r, guide, left))
                    ),
                    left,
                )
                for r in self.rows
            )
            if self.rows
            else 0
        )
        bar = min(max(width - fixed - used, MIN_BAR_WIDTH), MAX_BAR_WIDTH)
        return _Layout(guide, max(used, 1), bar)

    def header(self) -> Text:
        s = self.summary
        label = "trace" if len(s.trace_ids) == 1 else "traces"
        return Text.assemble(
            (f"{label} {', '.join(s.trace_ids)}", "bold"),
            f"  {s.span_count} spans  {len(s.processes)} processes  ",
            (_format_ms(s.duration_ms), "bold"),
        )

    def lines(self, width: int) -> list[Text]:
        """The header and one line per span, in tree order, for a console ``width`` wide."""
        layout = self.layout(width)
        out = [self.header()]
        for row, offset, duration in zip(self.rows, self.offsets, self.durations, strict=True):
            span = row.span
            colour = self.colours[span.service_name]
            name = _fit_name(span.name, self._name_budget(row, layout.guide, layout.left))
            cell = Text()
            cell.append(row.prefix(layout.guide), style="dim")
            if name:
                cell.append(name, style="bold red" if span.is_error else "bold")
                cell.append(_SEP)
            cell.append(self._process(span), style=colour)
            for marker, style in self._markers(row):
                cell.append(_SEP)
                cell.append(marker, style=style)
            cell.truncate(layout.left, overflow="ellipsis", pad=True)
            line = Text.assemble(
                cell,
                _SEP,
                offset.rjust(self.offset_width),
                _SEP,
                duration.rjust(self.duration_width),
                _SEP,
                (
                    _bar(span, self.origin, self.summary.duration_ms, layout.bar),
                    "red" if span.is_error else colour,
                ),
                no_wrap=True,
                overflow="ellipsis",
            )
            out.append(line)
        return out

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from self.lines(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        fixed = self._fixed_width()
        natural = self.natural_left()
        return Measurement(
            fixed + MIN_BAR_WIDTH + min(natural, 24), fixed + natural + MAX_BAR_WIDTH
        )


def render_tree(spans: Sequence[SpanRecord]) -> RenderableType:
    """The spans as a tree by parent, one line per span with process, timing and a timeline,
    fitted to the width of the console it is printed on (see :class:`TraceView`)."""
    if not spans:
        return Text("no spans recorded", style="dim")
    return TraceView(spans)
