"""`counterpoint`: the command line.

Exit codes: 0 ok, 1 the thing asked for did not happen (no result in time, no spans),
2 bad input or usage, 3 no broker reachable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from counterpoint.infra.project import ProjectError
from counterpoint.infra.safe_text import SafeFormatter, json_line
from counterpoint.infra.settings import Settings

if TYPE_CHECKING:
    from counterpoint.agents.signing import Keyring
    from counterpoint.infra.assembly import BuiltAgent
    from counterpoint.infra.project import Project
    from counterpoint.infra.terminal import SafeConsole

EXIT_FAILED, EXIT_USAGE, EXIT_NO_BROKER = 1, 2, 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Every command prints through these two (or json_line): nothing from the data can drive the
# operator's terminal (infra/terminal.py). Made at first use, so rich is imported by the
# commands that print, never by `counterpoint agent` (once per agent process), which only logs.
_consoles: dict[bool, SafeConsole] = {}


def _console(stderr: bool = False) -> SafeConsole:
    if stderr not in _consoles:
        from counterpoint.infra.terminal import SafeConsole

        _consoles[stderr] = SafeConsole(stderr=stderr)
    return _consoles[stderr]


def _escaped(text: str) -> str:
    """`text` as rich markup that shows it as it is."""
    from rich.markup import escape

    return escape(text)


if TYPE_CHECKING:  # module attributes, made by __getattr__ below
    console: SafeConsole
    err_console: SafeConsole


def __getattr__(name: str) -> Any:
    """`console` and `err_console` for the modules that print (infra/approvals_cli.py)."""
    if name in ("console", "err_console"):
        return _console(stderr=name == "err_console")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors())
        raise CliError(f"bad environment setting: {problems}") from exc


def _keyring(settings: Settings) -> Keyring:
    from counterpoint.infra.approval_keys import KeyConfigError

    try:
        return settings.keyring()
    except KeyConfigError as exc:
        raise CliError(f"approval keys: {exc}") from exc


async def _require_broker(settings: Settings) -> None:
    from counterpoint.bus.admin import broker_reachable

    if not await broker_reachable(settings.bootstrap_servers, timeout_s=3.0):
        hint = ("start one with `counterpoint up` or `counterpoint broker`, or set "
                "KAFKA_BOOTSTRAP_SERVERS" if settings.embedded else "check KAFKA_BOOTSTRAP_SERVERS")
        raise CliError(f"no Kafka broker answers at {settings.bootstrap_servers}: {hint}",
                       EXIT_NO_BROKER)


def _project(args: argparse.Namespace, settings: Settings) -> Project:
    """--config, else COUNTERPOINT_CONFIG, else ./counterpoint.toml, else the built-in one."""
    from counterpoint.infra.project import find_project

    return find_project(getattr(args, "config", None), settings.config)


def _built(settings: Settings, project: Project) -> list[BuiltAgent]:
    """The project's agents, built to learn their declarations (nothing is opened or made)."""
    from counterpoint.agents.llm.offline import OfflineProvider
    from counterpoint.agents.signing import Keyring
    from counterpoint.infra.assembly import build_project

    return build_project(settings, project, OfflineProvider(), Keyring.ephemeral())


def _parse_scale(items: Sequence[str], project: Project) -> dict[str, int]:
    from counterpoint.infra.stack import default_scale

    scale = default_scale(project)
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or name not in project.agents or not (count.isascii() and count.isdigit()):
            raise CliError(f"--scale {item!r}: expected NAME=N with NAME one of "
                           f"{', '.join(project.agents)} and N a whole number")
        scale[name] = int(count)
    return scale


# --- commands -------------------------------------------------------------------------------


async def cmd_broker(args: argparse.Namespace) -> int:
    from counterpoint.infra.admin import create_topics
    from counterpoint.infra.assembly import topics_of
    from counterpoint.infra.broker import EmbeddedBroker

    settings = _settings()
    project = _project(args, settings)
    topics = topics_of(b.agent for b in _built(settings, project))
    broker = EmbeddedBroker(args.host or settings.broker_host, args.port or settings.broker_port)
    await broker.start()
    if broker.reused:
        raise CliError(f"a broker is already running at {broker.bootstrap_servers}", EXIT_FAILED)
    await create_topics(broker.bootstrap_servers, topics)
    _console().print(f"embedded broker (Tansu, in memory) on [bold]{broker.bootstrap_servers}"
                  f"[/bold] with the topics of {project.origin}; Ctrl-C stops it",
                  highlight=False)
    try:
        await _until_signal()
    finally:
        broker.stop()
    return 0


async def cmd_topics(args: argparse.Namespace) -> int:
    from counterpoint.infra.admin import create_topics, topic_specs
    from counterpoint.infra.assembly import topics_of

    settings = _settings()
    topics = topics_of(b.agent for b in _built(settings, _project(args, settings)))
    await _require_broker(settings)
    created = await create_topics(settings.bootstrap_servers, topics)
    for spec in topic_specs(topics):
        state = "created" if spec.name in created else "exists"
        _console().print(f"{spec.name:40} {spec.partitions} partitions  {state}")
    return 0


async def cmd_agent(args: argparse.Namespace) -> int:
    from counterpoint.agents.tools.errors import ToolConfigError
    from counterpoint.infra.runner import run_agent_process

    settings = _settings()
    try:
        await run_agent_process(args.name, settings, _project(args, settings))
    except ToolConfigError as exc:
        raise CliError(f"agent {args.name} cannot start: {exc}") from exc
    return 0


async def cmd_up(args: argparse.Namespace) -> int:
    from counterpoint.infra.stack import Stack

    settings = _settings()
    project = _project(args, settings)
    scale = _parse_scale(args.scale, project)
    stack = Stack(settings, scale, project)  # builds and checks every agent: nothing started
    stop = asyncio.Event()
    _on_signals(stop.set)  # before anything starts: a stop during start-up still cleans up
    async with stack:
        where = "embedded broker" if stack.broker else "broker"
        _console().print(f"{where} at [bold]{stack.bootstrap_servers}[/bold]; "
                      f"logs in {stack.logs_dir}")
        assert stack.supervisor is not None
        for proc in stack.supervisor.processes:
            _console().print(f"  {proc.label:18} pid {proc.popen.pid}")
        with _console().status("agents joining their consumer groups…"):
            joined = await stack.wait_joined(stop=stop)
        if not stop.is_set():
            _console().print("all agents consuming; Ctrl-C stops everything" if joined else
                          "[yellow]some agents have not joined yet; see the logs[/yellow]")
        await stack.supervisor.watch(stop)
        _console().print("stopping agents…")
    return 0


async def cmd_publish(args: argparse.Namespace) -> int:
    from counterpoint.infra.publishing import InputError, publish
    from counterpoint.infra.telemetry import default_traces_dir, setup_telemetry

    origin = "stdin" if args.file == "-" else args.file
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {origin}: {exc.strerror}") from exc
    settings = _settings()
    from counterpoint.infra.publishing import validate

    try:
        # Before touching the broker: bad input fails fast.
        validate(args.kind, raw, origin, settings.max_alerts)
    except InputError as exc:
        raise CliError(str(exc)) from exc
    await _require_broker(settings)
    telemetry = setup_telemetry("cli", traces_dir=default_traces_dir(settings.home))
    started = time.monotonic()
    try:
        receipt = await publish(settings.kafka(), args.kind, raw, origin,
                                max_alerts=settings.max_alerts)
    finally:
        telemetry.shutdown()
    _console().print(f"published {args.kind} {receipt.source_id} to {receipt.topic}"
                  f"[{receipt.partition}]@{receipt.offset}")
    _console().print(f"request id: [bold]{receipt.request_id}[/bold]")
    if args.wait:
        return await _wait_and_show(settings, [(receipt.request_id, receipt.source_id)],
                                    args.wait, started)
    return 0


async def _wait_and_show(settings: Settings, requests: list[tuple[str, str]],
                         timeout_s: float, started: float) -> int:
    from counterpoint.infra.progress import Progress, show_progress

    tracked = [Progress(rid, label, started) for rid, label in requests]
    if not await show_progress(_console(), settings.kafka(), tracked, timeout_s):
        _console(stderr=True).print(f"[red]no result within {timeout_s:.0f}s[/red]")
        return EXIT_FAILED
    return 0


async def cmd_results(args: argparse.Namespace) -> int:
    from counterpoint.bus.kafka import tail
    from counterpoint.infra.progress import render_result
    from counterpoint.schemas.envelope import Envelope
    from counterpoint.topics.registry import SYNTHESIS_RESULTS

    settings = _settings()
    project = _project(args, settings)
    if project.file is not None:
        from counterpoint.infra.project_results import show_results

        built = _built(settings, project)
        await _require_broker(settings)
        await show_results(_console(), settings.kafka(), project, built, follow=args.follow,
                           as_json_lines=args.json, request=args.request)
        return 0
    await _require_broker(settings)
    if args.follow and not args.json:  # a person watching: results under a live status line
        from counterpoint.infra.follow import follow_with_status

        await follow_with_status(_console(), settings.kafka(), args.request)
        return 0
    seen: set[str] = set()
    async for record in tail(settings.kafka(), [SYNTHESIS_RESULTS.name], follow=args.follow):
        envelope = Envelope.from_headers(record.headers)
        if envelope is None or record.value is None or envelope.id in seen:
            continue  # a result redelivered after a crash has the same id: show it once
        seen.add(envelope.id)
        result = SYNTHESIS_RESULTS.decode(record.value)
        if args.request and result.request_id != args.request:
            continue
        if args.json:
            sys.stdout.write(json_line(result.model_dump(mode="json")))
            sys.stdout.flush()
        else:
            _console().print(render_result(result))
    return 0


async def cmd_trace(args: argparse.Namespace) -> int:
    from counterpoint.infra.telemetry import default_traces_dir
    from counterpoint.infra.tracetree import (
        load_spans,
        render_tree,
        spans_for_request,
        to_json_lines,
    )

    settings = _settings()
    traces = default_traces_dir(settings.home)
    deadline = asyncio.get_running_loop().time() + args.wait
    spans = spans_for_request(load_spans(traces), args.request_id)
    while not spans and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.25)
        spans = spans_for_request(load_spans(traces), args.request_id)
    if not spans:
        raise CliError(f"no spans recorded for request {args.request_id} in {traces} "
                       "(with OTEL_EXPORTER_OTLP_ENDPOINT set, spans go to the collector instead)",
                       EXIT_FAILED)
    if args.json:
        sys.stdout.write(to_json_lines(spans))
    else:
        _console().print(render_tree(spans))
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings()
    project = _project(args, settings)
    if project.file is not None:
        from counterpoint.infra.project_demo import run_project_demo

        return await run_project_demo(settings, _console(), project, timeout_s=args.timeout)
    from counterpoint.infra.demo import run_demo

    return await run_demo(settings, _console(), timeout_s=args.timeout)


async def cmd_deadletter_list(args: argparse.Namespace) -> int:
    from counterpoint.infra.deadletters import filtered, letter_json, read_letters, render_list

    settings = _settings()
    await _require_broker(settings)
    letters = filtered(await read_letters(settings.kafka()), reason=args.reason,
                       source_topic=args.source_topic)
    if args.json:
        for letter in letters:
            sys.stdout.write(json_line(letter_json(letter)))
        sys.stdout.flush()
    else:
        _console().print(render_list(letters))
    return 0


async def cmd_deadletter_show(args: argparse.Namespace) -> int:
    from counterpoint.infra.deadletters import (
        LetterError,
        LetterId,
        find,
        letter_json,
        read_letters,
        render_letter,
    )

    try:
        wanted = LetterId.parse(args.id)
    except LetterError as exc:
        raise CliError(str(exc)) from exc
    settings = _settings()
    await _require_broker(settings)
    try:
        (letter,) = find(await read_letters(settings.kafka()), [wanted])
    except LetterError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        sys.stdout.write(json_line(letter_json(letter, full=True)))
    else:
        _console().print(render_letter(letter))
    return 0


async def cmd_deadletter_redrive(args: argparse.Namespace) -> int:
    from counterpoint.bus.kafka import is_kafka_error
    from counterpoint.infra.deadletters import (
        LetterError,
        LetterId,
        Redrive,
        filtered,
        find,
        plan_redrive,
        read_letters,
        redrive_order,
        send,
    )

    bulk = args.all or args.reason is not None or args.source_topic is not None
    if not args.ids and not bulk:
        raise CliError("say which dead letters to redrive: IDs (PARTITION:OFFSET, as "
                       "`counterpoint deadletter list` shows them), --all, --reason R or "
                       "--source-topic T")
    if args.ids and bulk:
        raise CliError("give either IDs or --all/--reason/--source-topic, not both")
    if args.all and (args.reason is not None or args.source_topic is not None):
        raise CliError("--all redrives every dead letter; drop it to filter by --reason or "
                       "--source-topic")
    try:
        ids = [LetterId.parse(text) for text in args.ids]
    except LetterError as exc:
        raise CliError(str(exc)) from exc
    settings = _settings()
    await _require_broker(settings)
    letters = await read_letters(settings.kafka())
    plans: list[Redrive] = []
    try:
        if ids:
            plans = [plan_redrive(letter) for letter in find(letters, ids)]
        else:
            for letter in filtered(letters, reason=args.reason, source_topic=args.source_topic):
                try:
                    plans.append(plan_redrive(letter))
                except LetterError as exc:
                    _console(stderr=True).print(f"[yellow]skipped:[/yellow] {_escaped(str(exc))}")
    except LetterError as exc:
        raise CliError(str(exc)) from exc
    plans = redrive_order(plans, letters)
    if not plans:
        _console().print("no dead letters match; nothing to redrive")
        return 0

    def line(plan: Redrive) -> str:
        key = "no key" if plan.key is None else f"key {plan.key.decode('utf-8', 'replace')!r}"
        return _escaped(f"deadletter/{plan.letter} ({plan.reason}; {key}; {len(plan.value):,} "
                      f"bytes; redrive {plan.count}) -> {plan.topic}")

    if args.dry_run:
        for plan in plans:
            _console().print(f"would send {line(plan)}", highlight=False)
        _console().print(f"dry run: {len(plans)} record(s) would be sent; nothing was sent")
        return 0
    if bulk and not args.yes:
        if not sys.stdin.isatty():
            raise CliError(f"this would send {len(plans)} record(s) back to their source "
                           "topics; add --yes to confirm (or --dry-run to see them)")
        from rich.prompt import Confirm

        if not Confirm.ask(f"send {len(plans)} record(s) back to their source topics?",
                           console=_console(), default=False):
            _console().print("nothing sent")
            return EXIT_FAILED
    sent: list[tuple[Redrive, int, int]] = []
    try:
        await send(settings.kafka(), plans, sent)
    except Exception as exc:
        if not is_kafka_error(exc):
            raise
        failed = plans[len(sent)]
        for plan, partition, offset in sent:
            _console().print(f"sent {line(plan)}[{partition}]@{offset}", highlight=False)
        raise CliError(f"sending deadletter/{failed.letter} to {failed.topic} failed after "
                       f"{len(sent)} of {len(plans)} were sent: {exc!r}", EXIT_FAILED) from exc
    for plan, partition, offset in sent:
        _console().print(f"sent {line(plan)}[{partition}]@{offset}", highlight=False)
    _console().print(f"redrove {len(sent)} dead letter(s); they stay in deadletter, and any that "
                  "fail again become new dead letters")
    return 0


async def cmd_gateway(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from counterpoint.infra.gateway import create_app
    from counterpoint.infra.gateway_auth import parse_approvers
    from counterpoint.infra.intake import PROVIDERS, configured_secrets
    from counterpoint.infra.metrics import setup_metrics
    from counterpoint.infra.telemetry import default_traces_dir, setup_telemetry

    settings = _settings()
    token = os.environ.get("COUNTERPOINT_API_TOKEN", "").strip() or None
    secrets = configured_secrets(os.environ)
    approvers = parse_approvers(settings.approvers) if settings.approvers else {}
    app = create_app(settings.kafka(), token=token, approvers=approvers,
                     keys=_keyring(settings), policy=settings.approval_policy(),
                     limits=settings.limits(), publish_timeout_s=args.publish_timeout,
                     webhook_secrets=secrets,
                     signature_tolerance_s=settings.signature_tolerance_s,
                     max_alerts=settings.max_alerts)
    telemetry = setup_telemetry("gateway", traces_dir=default_traces_dir(settings.home))
    metrics = setup_metrics("gateway", port=None, instance_id=telemetry.instance_id,
                            served_by_app=True)
    _console().print(f"gateway on [bold]http://{args.host}:{args.port}[/bold] (OpenAPI at "
                  f"/openapi.json, docs at /docs, Prometheus at /metrics) publishing to "
                  f"{settings.bootstrap_servers}; "
                  + ("bearer token required" if token or approvers else "no authentication (set "
                     "COUNTERPOINT_API_TOKEN to require a bearer token)")
                  + (f"; approvers: {', '.join(sorted(approvers))}" if approvers else
                     "; nobody can approve here (set COUNTERPOINT_APPROVERS)"), highlight=False)
    for name, provider in PROVIDERS.items():
        _console().print(f"  /v1/webhooks/{name}: " + (
            "on, checked against its signature" if name in secrets else
            f"[yellow]refused (503)[/yellow]: {provider.setting} is not set"),
            highlight=False, soft_wrap=True)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                           log_level="info", lifespan="on"))
    try:
        await server.serve()
    finally:
        metrics.shutdown()
        telemetry.shutdown()
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    from counterpoint.infra.status import collect_status, render_status, status_json

    settings = _settings()
    built = _built(settings, _project(args, settings))
    await _require_broker(settings)
    status = await collect_status(settings.bootstrap_servers, settings.home, built)
    if args.json:
        sys.stdout.write(json_line(status_json(status)))
        sys.stdout.flush()
    else:
        _console().print(render_status(status))
    return 0


# --- plumbing -------------------------------------------------------------------------------


def _on_signals(callback: Any) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, callback)


async def _until_signal() -> None:
    stop = asyncio.Event()
    _on_signals(stop.set)
    await stop.wait()


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="the project file (default: $COUNTERPOINT_CONFIG, else "
                        "./counterpoint.toml, else the built-in ticket and alert pipeline)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="counterpoint", description=(
        "Event-driven multi-agent system on Kafka. With KAFKA_BOOTSTRAP_SERVERS unset, "
        "`up`, `demo` and `broker` run the embedded broker on 127.0.0.1:9092."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("broker", help="run the embedded broker (Tansu) in the foreground")
    s.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 9092)")
    _config_option(s)
    s.set_defaults(func=cmd_broker)

    s = sub.add_parser("topics", help="create the topics the project's agents declare "
                       "(idempotent)")
    _config_option(s)
    s.set_defaults(func=cmd_topics)

    s = sub.add_parser("up", help="broker if needed + topics + every agent as its own process")
    s.add_argument("--scale", action="append", default=[], metavar="NAME=N",
                   help="run N processes of agent NAME (repeatable)")
    _config_option(s)
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("agent", help="run one agent process (start it N times to scale)")
    s.add_argument("name", metavar="NAME|MODULE:ATTR",
                   help="an agent of the project, or an import string naming an Agent or a "
                   "factory in any importable module")
    _config_option(s)
    s.set_defaults(func=cmd_agent)

    s = sub.add_parser("publish", help="validate and publish a ticket or an alert")
    s.add_argument("kind", choices=["ticket", "alert"])
    s.add_argument("file", metavar="FILE|-", help="JSON file, or - for standard input")
    s.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="wait up to SECONDS for the result, showing progress")
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("results", help="print final results from synthesis.results")
    s.add_argument("--follow", "-f", action="store_true", help="keep printing new results, "
                   "under a live status line of the requests in progress (not with --json)")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.add_argument("--request", metavar="REQUEST_ID", help="only this request")
    _config_option(s)
    s.set_defaults(func=cmd_results)

    s = sub.add_parser("trace", help="draw one request's trace across every process")
    s.add_argument("request_id", metavar="REQUEST_ID")
    s.add_argument("--json", action="store_true", help="one JSON object per span")
    s.add_argument("--wait", type=float, default=3.0, metavar="SECONDS",
                   help="wait this long for spans to be flushed (default 3)")
    s.set_defaults(func=cmd_trace)

    s = sub.add_parser("deadletter", help="inspect dead letters and send them back (redrive)")
    dl = s.add_subparsers(dest="deadletter_command", required=True, metavar="SUBCOMMAND")
    d = dl.add_parser("list", help="every dead letter: id, time, source, reason, agent, message")
    d.add_argument("--reason", metavar="R", help="only this reason, e.g. schema-violation")
    d.add_argument("--source-topic", metavar="T", help="only letters from topic T")
    d.add_argument("--json", action="store_true", help="one JSON object per letter")
    d.set_defaults(func=cmd_deadletter_list)
    d = dl.add_parser("show", help="one dead letter: every header, the key and the value")
    d.add_argument("id", metavar="ID", help="PARTITION:OFFSET in deadletter, as list shows it")
    d.add_argument("--json", action="store_true", help="one JSON object")
    d.set_defaults(func=cmd_deadletter_show)
    d = dl.add_parser("redrive", help="send dead letters back to their source topic")
    d.add_argument("ids", nargs="*", metavar="ID", help="PARTITION:OFFSET of each letter")
    d.add_argument("--all", action="store_true", help="every dead letter")
    d.add_argument("--reason", metavar="R", help="every dead letter with this reason")
    d.add_argument("--source-topic", metavar="T", help="every dead letter from topic T")
    d.add_argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    d.add_argument("--yes", "-y", action="store_true",
                   help="do not ask before sending a selection (--all/--reason/--source-topic)")
    d.set_defaults(func=cmd_deadletter_redrive)

    s = sub.add_parser("gateway", help="HTTP gateway: tickets, Alertmanager webhooks and "
                       "CloudEvents in; request status out")
    s.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    s.add_argument("--publish-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="answer 503 when the broker has not acknowledged within this (default 5)")
    s.set_defaults(func=cmd_gateway)

    s = sub.add_parser("demo", help="the main job end to end: up, publish, progress, results "
                       "(with --config: the project's samples)")
    s.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS")
    _config_option(s)
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("status", help="each agent: consumer group, partitions, lag and the "
                       "local processes running it")
    s.add_argument("--json", action="store_true", help="one JSON object")
    _config_option(s)
    s.set_defaults(func=cmd_status)

    _approvals_parsers(sub)
    return p


def _approvals_command(name: str) -> Any:
    """`name` of infra/approvals_cli.py, imported only when that command runs: it pulls in
    rich's tables and the progress view, which `counterpoint agent` (started once per agent
    process) never needs."""
    async def run(args: argparse.Namespace) -> int:
        from counterpoint.infra import approvals_cli

        return int(await getattr(approvals_cli, name)(args))

    run.__name__ = run.__qualname__ = name
    return run


def _approvals_parsers(sub: Any) -> None:
    """approvals, approve, deny, request (run by infra/approvals_cli.py)."""
    s = sub.add_parser("approvals", help="actions waiting for a person's approval")
    s.add_argument("--all", action="store_true", help="also those already decided")
    s.add_argument("--json", action="store_true", help="one JSON object per approval")
    s.set_defaults(func=_approvals_command("cmd_approvals"))

    s = sub.add_parser("approve", help="approve a waiting action (the executor then runs it)")
    s.add_argument("id", metavar="ID", help="approval id, or a unique prefix (6+ characters)")
    s.add_argument("--reason", metavar="TEXT", help="optional note")
    s.set_defaults(func=_approvals_command("cmd_approve"))

    s = sub.add_parser("deny", help="deny a waiting action (it never runs)")
    s.add_argument("id", metavar="ID", help="approval id, or a unique prefix (6+ characters)")
    s.add_argument("--reason", metavar="TEXT", required=True, help="why (required)")
    s.set_defaults(func=_approvals_command("cmd_deny"))

    s = sub.add_parser("request", help="one request's record: result, and each proposed "
                       "action -> decision (who) -> what ran")
    s.add_argument("request_id", metavar="REQUEST_ID")
    s.add_argument("--json", action="store_true", help="one JSON object")
    s.set_defaults(func=_approvals_command("cmd_request"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.command in ("agent", "broker", "up")
                        else logging.WARNING,
                        format=LOG_FORMAT, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(SafeFormatter(LOG_FORMAT))
    from counterpoint.infra.lifeline import follow_supervisor
    from counterpoint.infra.redaction import install_log_redaction

    install_log_redaction()  # secrets and personal data never reach a log (infra/redaction.py)
    follow_supervisor()  # a child of `up` stops when `up` dies, however (infra/lifeline.py)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # The anthropic SDK's HTTP client logs every model call at INFO: a line formatted and
    # redacted per call, for nothing an operator reads (failures still log as warnings).
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    from counterpoint.agents.tools.errors import ToolConfigError

    try:
        return int(asyncio.run(args.func(args)))
    except CliError as exc:
        _console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        return exc.code
    except (ProjectError, ToolConfigError) as exc:  # the user's file to fix
        _console(stderr=True).print(f"[red]error:[/red] {_escaped(str(exc))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
