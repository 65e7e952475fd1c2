"""`counterpoint results --follow` for a person: each result as it arrives, under a live
status line of every request seen so far.

    requests 12 · in progress 2 · done 10 │ 3f2a1b9c investigating 2/4 · 9d8e7f6a triaged

Progress is folded from triage.decisions, investigation.findings and synthesis.results with
a group-less reader, like `publish --wait`; a request counts as seen once triage has planned
it. A result is printed once per result event id (a redelivered result has the same id); a
later closing result of a resolved alert is printed too, and the request counts as done.
"""

from __future__ import annotations

from contextlib import aclosing

from rich.console import Console
from rich.live import Live
from rich.text import Text

from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import KafkaConfig, tail
from counterpoint.infra.progress import WATCHED, Progress, end_live_line, render_result
from counterpoint.schemas.envelope import Envelope
from counterpoint.schemas.events import Result
from counterpoint.topics.registry import SYNTHESIS_RESULTS

SHOWN_PENDING = 6  # pending requests named on the line; the rest are counted


class FollowState:
    """Every request seen, by request id, in the order first seen. Pure: no I/O."""

    def __init__(self, only: str | None = None) -> None:
        self.only = only
        self.requests: dict[str, Progress] = {}
        self._printed: set[str] = set()

    def apply(self, record: RawRecord) -> Result | None:
        """Fold a record in; the result to print when it is a result not printed before."""
        envelope = Envelope.from_headers(record.headers)
        if envelope is None or record.value is None:
            return None
        rid = envelope.request_id
        if self.only is not None and rid != self.only:
            return None
        progress = self.requests.get(rid)
        if progress is None:
            progress = self.requests[rid] = Progress(rid, envelope.subject or "")
        progress.apply(record)
        if record.topic != SYNTHESIS_RESULTS.name or envelope.id in self._printed:
            return None
        self._printed.add(envelope.id)
        return SYNTHESIS_RESULTS.decode(record.value)

    def pending(self) -> list[Progress]:
        return [p for p in self.requests.values() if not p.done]


def stage(p: Progress) -> str:
    d = p.decision
    if d is None:
        return "investigating" if p.findings else "triage…"
    done = sum(1 for inv in d.investigations if inv.task_id in p.findings)
    if done < len(d.investigations):
        return f"investigating {done}/{len(d.investigations)}"
    return "synthesis…"


def status_line(state: FollowState) -> Text:
    pending = state.pending()
    total = len(state.requests)
    line = Text()
    line.append(f"requests {total}", style="bold")
    line.append(" · ")
    line.append(f"in progress {len(pending)}", style="yellow" if pending else "")
    line.append(" · ")
    line.append(f"done {total - len(pending)}", style="green")
    if pending:
        line.append(" │ ")
        for i, p in enumerate(pending[:SHOWN_PENDING]):
            if i:
                line.append(" · ")
            line.append(p.request_id[:8], style="cyan")
            line.append(f" {stage(p)}")
        if len(pending) > SHOWN_PENDING:
            line.append(f" · +{len(pending) - SHOWN_PENDING} more", style="dim")
    return line


async def follow_with_status(console: Console, config: KafkaConfig,
                             only: str | None = None) -> None:
    """Print results as they come under a live status line; runs until cancelled."""
    state = FollowState(only)
    with Live(status_line(state), console=console, refresh_per_second=4,
              transient=False) as live:
        try:
            async with aclosing(tail(config, [t.name for t in WATCHED], follow=True,
                                     idle_timeout_s=0.2)) as stream:
                async for record in stream:
                    try:
                        result = state.apply(record)
                    except ValueError:
                        continue  # a record the agents would dead-letter: not ours to judge
                    if result is not None:
                        live.console.print(render_result(result))
                    live.update(status_line(state))
        finally:
            live.update(status_line(state))
    end_live_line(console)
