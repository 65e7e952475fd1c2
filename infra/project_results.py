"""`counterpoint results` for a project file's pipeline: the events on its results topics.

A project names its final topics (`[project] results = [...]`); each event there is one
result. Shown once per event id (a result republished after a crash has the same id), as a
panel or, with --json, as the event's JSON on one line, exactly as the built-in results are.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel
from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.text import Text

from counterpoint.bus.kafka import KafkaConfig, tail
from counterpoint.infra.assembly import BuiltAgent, topics_of
from counterpoint.infra.project import Project, ProjectError
from counterpoint.infra.terminal import json_line
from counterpoint.schemas.envelope import Envelope
from counterpoint.topics.topic import Topic


def results_topics(project: Project, built: Sequence[BuiltAgent]) -> list[Topic[Any]]:
    declared = {t.name: t for t in topics_of(b.agent for b in built)}
    if not project.results:
        raise ProjectError(f"{project.where('project', 'results')}: name the topics whose "
                           "events are this pipeline's results, e.g. results = [\"outreach\"]")
    return [declared[name] for name in project.results]


def as_json(data: Any) -> Any:
    return data.model_dump(mode="json") if isinstance(data, BaseModel) else data


def render(topic: str, envelope: Envelope, data: Any) -> RenderableType:
    head = Text(f"request {envelope.request_id}  ·  event {envelope.id}", style="dim")
    body = JSON(orjson.dumps(as_json(data)).decode())
    return Panel(Group(head, body), title=f"{topic}", title_align="left", border_style="green")


async def show_results(console: Console, config: KafkaConfig, project: Project,
                       built: Sequence[BuiltAgent], *, follow: bool, as_json_lines: bool,
                       request: str | None) -> None:
    topics = {t.name: t for t in results_topics(project, built)}
    seen: set[str] = set()
    async for record in tail(config, list(topics), follow=follow):
        envelope = Envelope.from_headers(record.headers)
        if envelope is None or record.value is None or envelope.id in seen:
            continue
        seen.add(envelope.id)
        if request and envelope.request_id != request:
            continue
        data = topics[record.topic].decode(record.value)
        if as_json_lines:
            sys.stdout.write(json_line(as_json(data)))
            sys.stdout.flush()
        else:
            console.print(render(record.topic, envelope, data))
