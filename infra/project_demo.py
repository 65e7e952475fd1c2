"""`counterpoint demo --config FILE`: a project's pipeline end to end, shown as it happens.

Starts the project's stack (one process per agent), publishes its samples ([[samples]]) as
new requests, shows each request's progress through the project's topics live, prints the
results and the trace trees, and stops everything. Exit 0 only when every sample got an event
on one of the project's results topics within the time allowed.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from counterpoint.bus.kafka import KafkaConfig, Producer, tail
from counterpoint.infra.assembly import topics_of
from counterpoint.infra.demo import describe_llm, joined_table
from counterpoint.infra.progress import end_live_line
from counterpoint.infra.project import Project, ProjectError
from counterpoint.infra.project_results import render
from counterpoint.infra.settings import Settings
from counterpoint.infra.stack import Stack
from counterpoint.infra.telemetry import default_traces_dir, setup_telemetry
from counterpoint.infra.tracetree import load_spans, render_tree, spans_for_request, summarize
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.topics.topic import Topic

SOURCE = "/counterpoint/demo"


@dataclass
class Sample:
    label: str
    request_id: str
    started: float
    seen: dict[str, int] = field(default_factory=dict)  # topic -> events of this request
    result: tuple[str, Envelope, Any] | None = None  # (topic, envelope, event) once final
    finished: float | None = None


async def publish_samples(config: KafkaConfig, project: Project,
                          topics: dict[str, Topic[Any]]) -> list[Sample]:
    """Each sample as a new request: its JSON as the value, a CloudEvents envelope."""
    out = []
    async with Producer(config, client_id="counterpoint-demo") as producer:
        for i, sample in enumerate(project.samples):
            value = project.sample_bytes(sample, i)
            target = topics[sample.topic]
            rid = new_event_id()
            headers = Envelope(id=rid, source=SOURCE, type=target.ce_type, time=now(),
                               request_id=rid).to_headers()
            started = time.monotonic()
            await producer.send(target.name, value, key=(sample.key or rid).encode(),
                                headers=headers)
            out.append(Sample(f"{i + 1}. {sample.topic}", rid, started))
    return out


def progress_table(samples: list[Sample], order: list[str]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("sample", "request", "events so far", "result", "time"):
        table.add_column(column)
    for s in samples:
        steps = Text()
        for name in order:
            if s.seen.get(name):
                steps.append(f"{name}:{s.seen[name]} ", style="green")
        done = Text(f"✓ {s.result[0]}", style="green") if s.result else Text("…", "yellow")
        elapsed = (s.finished or time.monotonic()) - s.started
        table.add_row(s.label, s.request_id[:8], steps, done, f"{elapsed:5.1f}s")
    return table


async def watch(config: KafkaConfig, samples: list[Sample], topics: dict[str, Topic[Any]],
                results: set[str], live: Live, order: list[str], timeout_s: float) -> bool:
    by_id = {s.request_id: s for s in samples}

    async def follow() -> None:
        async with aclosing(tail(config, list(topics), follow=True,
                                 idle_timeout_s=0.2)) as stream:
            async for record in stream:
                envelope = Envelope.from_headers(record.headers)
                s = by_id.get(envelope.request_id) if envelope is not None else None
                if s is None or envelope is None or record.value is None:
                    continue
                s.seen[record.topic] = s.seen.get(record.topic, 0) + 1
                if record.topic in results and s.result is None:
                    s.result = (record.topic, envelope, topics[record.topic].decode(record.value))
                    s.finished = time.monotonic()
                live.update(progress_table(samples, order))
                if all(x.result is not None for x in samples):
                    return

    try:
        await asyncio.wait_for(follow(), timeout=timeout_s)
        return True
    except TimeoutError:
        return False


async def run_project_demo(settings: Settings, console: Console, project: Project,
                           timeout_s: float = 120.0) -> int:
    if not project.samples:
        raise ProjectError(f"{project.where('samples')}: the demo publishes the project's "
                           "samples; add [[samples]] with a topic and a value or file")
    if not project.results:
        raise ProjectError(f"{project.where('project', 'results')}: the demo waits for each "
                           "sample's result; name the topics that carry results")
    console.print(Rule(f"Counterpoint demo: {escape(project.name)} ({escape(project.origin)})"))
    stack = Stack(settings, project=project)  # builds and checks every agent first
    topics = {t.name: t for t in topics_of(b.agent for b in stack.agents)}
    results = set(project.results)
    order = sorted(topics, key=lambda n: (n in results, n))
    for i, sample in enumerate(project.samples):
        project.sample_bytes(sample, i)  # a missing or broken file stops us before starting
    describe_llm(settings, console, list(project.agents))
    telemetry = setup_telemetry("cli", traces_dir=default_traces_dir(settings.home))
    try:
        async with stack:
            console.print(f"broker: {'embedded Tansu' if stack.broker else 'external'} at "
                          f"{stack.bootstrap_servers}; agent logs in {stack.logs_dir}")
            with Live(joined_table(stack), console=console, refresh_per_second=4) as live:
                await stack.wait_joined(on_tick=lambda: live.update(joined_table(stack)))
            end_live_line(console)
            samples = await publish_samples(stack.settings.kafka(), project, topics)
            for s in samples:
                console.print(f"published sample {escape(s.label)} → request "
                              f"[bold]{s.request_id}[/bold]")
            with Live(progress_table(samples, order), console=console,
                      refresh_per_second=8) as live:
                ok = await watch(stack.settings.kafka(), samples, topics, results, live, order,
                                 timeout_s)
                live.update(progress_table(samples, order))
            end_live_line(console)
            for s in samples:
                if s.result is not None:
                    console.print(render(*s.result))
            await asyncio.sleep(0.6)  # agents export spans every 200 ms
            for s in samples:
                spans = spans_for_request(load_spans(default_traces_dir(settings.home)),
                                          s.request_id)
                if spans:
                    summary = summarize(spans)
                    console.print(Rule(f"trace of sample {escape(s.label)}: "
                                       f"{summary.span_count} spans in "
                                       f"{len(summary.processes)} processes"))
                    console.print(render_tree(spans))
            console.print(Rule("shutting down"))
    finally:
        telemetry.shutdown()
    if not ok:
        missing = [s.label for s in samples if s.result is None]
        console.print(f"[red]no result within {timeout_s:.0f}s for: "
                      f"{escape(', '.join(missing))}[/red]")
        return 1
    console.print(f"done: every sample got its result on {escape(', '.join(project.results))}")
    return 0
