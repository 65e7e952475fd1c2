"""`counterpoint demo`: the main job end to end, shown as it happens.

Starts the stack, publishes the dual-intent ticket and an Alertmanager alert, shows live
progress per request, prints both results, approves their risky actions itself (saying so) and
shows what the executor ran, prints the trace trees, and shuts everything down.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Mapping, Sequence
from importlib import resources

from rich.console import Console
from rich.live import Live
from rich.rule import Rule
from rich.table import Table

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.llm.routing import models_by_agent
from counterpoint.infra.demo_approvals import approve_and_show
from counterpoint.infra.progress import Progress, end_live_line, show_progress
from counterpoint.infra.publishing import Kind, publish
from counterpoint.infra.settings import Settings
from counterpoint.infra.stack import Stack
from counterpoint.infra.telemetry import default_traces_dir, setup_telemetry
from counterpoint.infra.tracetree import load_spans, render_tree, spans_for_request, summarize

EXAMPLES: tuple[tuple[Kind, str], ...] = (
    ("ticket", "ticket_dual_intent.json"), ("alert", "alert_alertmanager.json"))


def example(name: str) -> bytes:
    return resources.files("counterpoint.infra").joinpath("examples", name).read_bytes()


def joined_table(stack: Stack) -> Table:
    table = Table.grid(padding=(0, 2))
    for label, ok in stack.joined().items():
        table.add_row(label, "[green]consuming[/green]" if ok else "[yellow]joining…[/yellow]")
    return table


def describe_llm(settings: Settings, console: Console, agents: Sequence[str],
                 models: Mapping[str, str] | None = None) -> None:
    """Which provider writes the text, said before anything runs."""
    if settings.anthropic_api_key is None:
        console.print("LLM: [bold yellow]offline provider[/bold yellow] (no ANTHROPIC_API_KEY): "
                      "deterministic rules, no language model; every text says so.")
    else:
        routes = models_by_agent(settings.models(models), agents)
        where = f" at {settings.anthropic_base_url}" if settings.anthropic_base_url else ""
        console.print(f"LLM: [bold]Claude[/bold] through the anthropic SDK{where}; models: "
                      + ", ".join(f"{agent} {model}" for agent, model in routes.items()))


async def run_demo(settings: Settings, console: Console, timeout_s: float = 120.0) -> int:
    console.print(Rule("Counterpoint demo"))
    describe_llm(settings, console, AGENT_NAMES)
    telemetry = setup_telemetry("cli", traces_dir=default_traces_dir(settings.home))
    # Ctrl-C or SIGTERM cancels the demo, and the stack's exit stops agents and broker.
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        async with Stack(settings) as stack:
            console.print(f"broker: {'embedded Tansu' if stack.broker else 'external'} at "
                          f"{stack.bootstrap_servers}; agent logs in {stack.logs_dir}")
            t0 = time.monotonic()
            with Live(joined_table(stack), console=console, refresh_per_second=4) as live:
                joined = await stack.wait_joined(on_tick=lambda: live.update(joined_table(stack)))
            end_live_line(console)
            console.print(f"{len(stack.joined())} agent processes "
                          f"{'consuming' if joined else 'started (some still joining)'} "
                          f"after {time.monotonic() - t0:.1f}s")
            tracked = []
            for kind, name in EXAMPLES:
                started = time.monotonic()
                receipt = await publish(stack.settings.kafka(), kind, example(name),
                                        name, source="/counterpoint/demo")
                console.print(f"published {kind} {receipt.source_id} → request "
                              f"[bold]{receipt.request_id}[/bold]")
                tracked.append(Progress(receipt.request_id, f"{kind} {receipt.source_id}",
                                        started))
            ok = await show_progress(console, stack.settings.kafka(), tracked, timeout_s)
            acted = ok and await approve_and_show(console, stack.settings.kafka(), tracked,
                                                  stack.settings.keyring(),
                                                  stack.settings.approval_policy())
            await asyncio.sleep(0.6)  # agents export spans every 200 ms
            for p in tracked:
                spans = spans_for_request(load_spans(default_traces_dir(settings.home)),
                                          p.request_id)
                if spans:
                    s = summarize(spans)
                    console.print(Rule(f"trace of {p.label}: {s.span_count} spans in "
                                       f"{len(s.processes)} processes"))
                    console.print(render_tree(spans))
            console.print(Rule("shutting down"))
        if not ok:
            console.print(f"[red]not every request finished within {timeout_s:.0f}s[/red]")
            return 1
        if not acted:
            console.print("[red]not every proposed action was decided and run in time[/red]")
            return 1
        console.print("done: both requests answered; `counterpoint trace REQUEST_ID` redraws "
                      "a trace.")
        return 0
    finally:
        telemetry.shutdown()
