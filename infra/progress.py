"""Watching requests move through the agents, and drawing results for a person.

Progress is read from the topics themselves (decisions, findings, results) with a group-less
reader, so watching never takes work away from an agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, tail
from counterpoint.infra.costview import cost_line, history_text, steps_table
from counterpoint.infra.webhook_status import DeliveryInfo
from counterpoint.schemas.envelope import Envelope
from counterpoint.schemas.events import Finding, Resolution, Result, TriageDecision
from counterpoint.topics.registry import (
    INVESTIGATION_FINDINGS,
    SYNTHESIS_RESULTS,
    TRIAGE_DECISIONS,
    Topic,
)

WATCHED: tuple[Topic[Any], ...] = (TRIAGE_DECISIONS, INVESTIGATION_FINDINGS, SYNTHESIS_RESULTS)


@dataclass
class Progress:
    request_id: str
    label: str
    started: float = field(default_factory=time.monotonic)  # pass the time before publishing
    decision: TriageDecision | None = None
    findings: dict[str, Finding] = field(default_factory=dict)
    result: Result | None = None
    result_id: str | None = None
    finished: float | None = None
    resolution: Resolution | None = None  # the alert resolved: the request is closed
    delivery: DeliveryInfo | None = None  # its result's webhook delivery, if it has one

    def apply(self, record: RawRecord) -> bool:
        """Fold one record in; True when it belonged to this request."""
        envelope = Envelope.from_headers(record.headers)
        if envelope is None or envelope.request_id != self.request_id or record.value is None:
            return False
        topic = next(t for t in WATCHED if t.name == record.topic)
        event = topic.decode(record.value)
        if isinstance(event, TriageDecision):
            self.decision = event
        elif isinstance(event, Finding):
            self.findings[event.task_id] = event
        elif isinstance(event, Result):
            self.resolution = event.resolution or self.resolution
            # A closing result (no findings) does not replace the runbook published before.
            if self.result is None or (event.resolution is not None and event.findings):
                self.result, self.result_id = event, envelope.id
                self.finished = self.finished or time.monotonic()
        return True

    @property
    def done(self) -> bool:
        return self.result is not None


async def watch(config: KafkaConfig, progress: Iterable[Progress],
                on_change: Callable[[], None], timeout_s: float) -> bool:
    """Follow the topics until every request has a result (True) or time runs out (False)."""
    tracked = {p.request_id: p for p in progress}

    async def follow() -> None:
        # aclosing: a timeout must still stop the reader's consumer, not leave it to the GC.
        async with aclosing(tail(config, [t.name for t in WATCHED], follow=True,
                                 idle_timeout_s=0.2)) as stream:
            async for record in stream:
                for p in tracked.values():
                    if p.apply(record):
                        on_change()
                if all(p.done for p in tracked.values()):
                    return

    try:
        await asyncio.wait_for(follow(), timeout=timeout_s)
        return True
    except TimeoutError:
        return False


SHORT = {"infrastructure": "infra", "knowledge": "kb"}


def _mark(ok: bool, pending: str = "…") -> Text:
    return Text("✓", style="green") if ok else Text(pending, style="yellow")


def render_progress(items: Iterable[Progress]) -> RenderableType:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("request")
    table.add_column("triage")
    table.add_column("investigations")
    table.add_column("synthesis")
    table.add_column("time", justify="right")
    for p in items:
        d = p.decision
        triage = Text(f"✓ {d.priority}", style="green") if d else _mark(False)
        steps = Text()
        for inv in d.investigations if d else []:
            ok = inv.task_id in p.findings
            name = SHORT.get(inv.skill, inv.skill)
            if inv.skill == "infrastructure":
                name += ":" + inv.focus.split()[0]
            steps.append(f"{name}{'✓' if ok else '…'} ", style="green" if ok else "yellow")
        synth = (Text(f"✓ {p.result.status}", style="green" if p.result.status == "complete"
                      else "magenta") if p.result else _mark(False))
        elapsed = (p.finished or time.monotonic()) - p.started
        table.add_row(p.label, triage, steps, synth, f"{elapsed:5.1f}s")
    return table


async def show_progress(console: Console, config: KafkaConfig, tracked: list[Progress],
                        timeout_s: float) -> bool:
    """Live status until every request has its result, then the results themselves."""
    with Live(render_progress(tracked), console=console, refresh_per_second=8) as live:
        ok = await watch(config, tracked, lambda: live.update(render_progress(tracked)),
                         timeout_s)
        live.update(render_progress(tracked))
    end_live_line(console)
    for p in tracked:
        if p.result is not None:
            console.print(render_result(p.result))
    return ok


def end_live_line(console: Console) -> None:
    """A Live display printed to a pipe leaves its last frame without a line break."""
    if not console.is_terminal:
        console.print()


def render_result(result: Result) -> RenderableType:
    head = Table.grid(padding=(0, 2))
    head.add_row("request", result.request_id)
    head.add_row("status", result.status + (f" — missing: {', '.join(result.missing)}"
                                            if result.missing else ""))
    head.add_row("priority", result.priority)
    if result.resolution is not None:
        r = result.resolution
        head.add_row("resolved", (r.resolved_at.isoformat() if r.resolved_at else "yes")
                     + (" (during the investigation)" if r.during == "investigation" else ""))
    gen = result.generation
    who = (f"{gen.provider} ({gen.model}) — OFFLINE, no language model" if gen.offline
           else f"{gen.provider} {gen.model}")
    head.add_row("written by", who)
    u = result.usage
    head.add_row("tokens", f"in {u.input_tokens} / out {u.output_tokens} over {u.calls} calls"
                 + (" (estimated)" if u.estimated else ""))
    head.add_row("cost", cost_line(result))
    if result.history:
        head.add_row("remembered", history_text(result))
    if result.customer:
        c = result.customer
        head.add_row("customer", f"{c.get('name')} — {c.get('tier')} tier, {c.get('tenure')}")
    findings = Table(title="findings", title_justify="left", box=None, header_style="bold")
    findings.add_column("skill")
    findings.add_column("agent")
    findings.add_column("summary", overflow="fold")
    for f in result.findings:
        findings.add_row(f"{f.skill}/{f.focus}", f.agent, f.summary + (
            f" (reused from request {f.reused_from.request_id})" if f.reused_from else ""))
    # Text, not a markup string: a title is data, and rich would read brackets in it as markup.
    title = Text(f"{result.kind} for {result.source_id}: {result.title}")
    return Panel(Group(head, Text(""), Text(result.text), Text(""), findings, Text(""),
                       steps_table(result)), title=title,
                 title_align="left", border_style="green" if result.status == "complete"
                 else "magenta")
