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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import RenderableType
from rich.text import Text
from rich.tree import Tree

__all__ = [
    "REQUEST_ID_ATTRIBUTE",
    "EventRecord",
    "SpanRecord",
    "SpanScan",
    "TraceSummary",
    "load_spans",
    "render_tree",
    "scan_spans",
    "spans_for_request",
    "summarize",
    "to_json_lines",
]

log = logging.getLogger(__name__)

REQUEST_ID_ATTRIBUTE = "counterpoint.request_id"
BAR_WIDTH = 24
_GUIDE_WIDTH = 4  # columns rich.tree indents each level by
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
    return "".join(orjson.dumps(s.to_dict()).decode() + "\n" for s in spans)


def _ms(moment: datetime, origin: datetime) -> float:
    return (moment - origin).total_seconds() * 1000


def _format_ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if abs(ms) >= 1000 else f"{ms:.1f} ms"


def _bar(span: SpanRecord, origin: datetime, total_ms: float) -> str:
    if total_ms <= 0:
        return "▕" + "█" * BAR_WIDTH + "▏"
    first = min(int(_ms(span.start, origin) / total_ms * BAR_WIDTH), BAR_WIDTH - 1)
    last = min(max(math.ceil(_ms(span.end, origin) / total_ms * BAR_WIDTH), first + 1), BAR_WIDTH)
    return "▕" + " " * first + "█" * (last - first) + " " * (BAR_WIDTH - last) + "▏"


def _short_instance(instance_id: str) -> str:
    # Instance ids are "<host>-<pid>" (or a UUID); the last part tells processes apart.
    return instance_id.rsplit("-", 1)[-1][:8]


class _TreeBuilder:
    def __init__(self, spans: Sequence[SpanRecord]) -> None:
        self.spans = _by_start(spans)
        summary = summarize(self.spans)
        self.summary = summary
        self.origin = summary.start or datetime.now(UTC)
        self.colours = {
            name: _PALETTE[i % len(_PALETTE)]
            for i, name in enumerate(sorted({s.service_name for s in self.spans}))
        }
        known = {(s.trace_id, s.span_id) for s in self.spans}
        self.children: dict[tuple[str, str], list[SpanRecord]] = defaultdict(list)
        self.roots: list[SpanRecord] = []
        for s in self.spans:
            if s.parent_id is not None and (s.trace_id, s.parent_id) in known:
                self.children[(s.trace_id, s.parent_id)].append(s)
            else:
                self.roots.append(s)
        self.depths = self._depths()
        self.label_width = max(
            (self.depths[id(s)] * _GUIDE_WIDTH + len(self._who(s)) for s in self.spans),
            default=0,
        )

    def _depths(self) -> dict[int, int]:
        depths: dict[int, int] = {}
        stack = [(s, 1) for s in self.roots]
        while stack:
            span, depth = stack.pop()
            if id(span) in depths:
                continue
            depths[id(span)] = depth
            stack.extend((c, depth + 1) for c in self.children[(span.trace_id, span.span_id)])
        # Spans in a parent cycle are unreachable from any root: show them at the top level.
        for s in self.spans:
            if id(s) not in depths:
                self.roots.append(s)
                depths[id(s)] = 1
        return depths

    def _who(self, span: SpanRecord) -> str:
        return f"{span.name}  {span.service_name}[{_short_instance(span.instance_id)}]"

    def header(self) -> Text:
        s = self.summary
        label = "trace" if len(s.trace_ids) == 1 else "traces"
        return Text.assemble(
            (f"{label} {', '.join(s.trace_ids)}", "bold"),
            f"  {s.span_count} spans  {len(s.processes)} processes  ",
            (_format_ms(s.duration_ms), "bold"),
        )

    def label(self, span: SpanRecord, orphan: bool) -> Text:
        colour = self.colours[span.service_name]
        name_style = "bold red" if span.is_error else "bold"
        pad = self.label_width - self.depths[id(span)] * _GUIDE_WIDTH - len(self._who(span))
        text = Text.assemble(
            (span.name, name_style),
            "  ",
            (f"{span.service_name}[{_short_instance(span.instance_id)}]", colour),
            " " * pad,
            f"  {'+' + _format_ms(_ms(span.start, self.origin)):>10}",
            f"  {_format_ms(span.duration_ms):>9}  ",
            (
                _bar(span, self.origin, self.summary.duration_ms),
                "red" if span.is_error else colour,
            ),
        )
        if span.is_error:
            text.append("  ERROR", style="bold red")
        if orphan:
            text.append("  (parent not recorded)", style="dim")
        return text

    def build(self) -> Tree:
        tree = Tree(self.header(), guide_style="dim")
        stack: list[tuple[Tree, SpanRecord]] = [(tree, s) for s in reversed(self.roots)]
        seen: set[int] = set()
        while stack:
            parent, span = stack.pop()
            if id(span) in seen:
                continue
            seen.add(id(span))
            node = parent.add(
                self.label(span, orphan=span.parent_id is not None and parent is tree)
            )
            kids = self.children[(span.trace_id, span.span_id)]
            stack.extend((node, c) for c in reversed(kids))
        return tree


def render_tree(spans: Sequence[SpanRecord]) -> RenderableType:
    """The spans as a tree by parent, one line per span with process, timing and a timeline."""
    if not spans:
        return Text("no spans recorded", style="dim")
    return _TreeBuilder(spans).build()
