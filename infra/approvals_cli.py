"""`counterpoint approvals | approve | deny | request`: human approval from the command line.

    counterpoint approvals [--all] [--json]     what waits for a person (with --all: decided too)
    counterpoint approve ID [--reason TEXT]     ID: the whole approval id or a unique prefix
    counterpoint deny ID --reason TEXT
    counterpoint request REQUEST_ID [--json]    proposed -> decided (by whom) -> executed

Who decides is not a flag: a decision is signed with the CLI's key ($COUNTERPOINT_KEYS_DIR/
cli.pem) under the identity the trust binds to that key, or, for a key bound to none (the
development key), COUNTERPOINT_APPROVER or your user name.

Nothing here waits on an agent: a decision is published to approvals.decided and the command
reads the log back to confirm that its decision is the first one (the one that counts).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from counterpoint.bus.kafka import KafkaConfig, Producer, tail
from counterpoint.infra.approvals import (
    APPROVAL_TOPICS,
    ActionRecord,
    ApprovalBook,
    ApprovalError,
    Verdict,
    check_decidable,
    cli_approver,
    make_decision,
    read_book,
    send_decision,
)
from counterpoint.infra.cli import (
    EXIT_FAILED,
    CliError,
    _keyring,
    _require_broker,
    _settings,
    console,
)
from counterpoint.infra.progress import WATCHED, Progress, render_result
from counterpoint.infra.terminal import json_line
from counterpoint.schemas.envelope import Envelope, now

CLI_SOURCE = "/counterpoint/cli"
CONFIRM_S = 10.0  # how long to read the log back for our own decision


def _short(text: str, n: int = 12) -> str:
    return text[:n]


def _ago(moment: datetime) -> str:
    seconds = int((now() - moment).total_seconds())
    return _duration(seconds) + " ago" if seconds >= 0 else "in " + _duration(-seconds)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def render_approvals(items: list[ActionRecord]) -> RenderableType:
    if not items:
        return Text("no approvals waiting")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("approval", "request", "source", "action", "target", "risk", "asked",
                "expires", "state"):
        table.add_column(col)
    for a in items:
        r = a.requested
        assert r is not None
        state = a.state if a.decision is None else f"{a.state} by {a.decision.decided_by}"
        table.add_row(_short(a.approval_id), _short(a.request_id), a.source_id, a.action.action,
                      a.action.target, a.action.risk, _ago(r.requested_at),
                      _ago(r.expires_at) if a.decision is None else "-", escape(state),
                      style="yellow" if a.decision is None else None)
    return table


def render_actions(items: list[ActionRecord]) -> RenderableType:
    table = Table(title="actions: proposed -> decided -> executed", title_justify="left",
                  box=None, header_style="bold", pad_edge=False)
    for col in ("approval", "action", "risk", "decision", "executed"):
        table.add_column(col, overflow="fold")
    for a in items:
        d, x = a.decision, a.executed
        if d is None:
            decided = "waiting for a person"
            if a.requested is not None:
                decided += f" (expires {_ago(a.requested.expires_at)})"
        else:
            decided = f"{d.decision} by {d.decided_by} at {d.decided_at:%H:%M:%S}"
            if d.reason:
                decided += f": {d.reason}"
            if a.ignored:
                decided += f"; {len(a.ignored)} later decision(s) ignored"
        if a.escalation is not None and d is not None and d.decision == "expired":
            decided += " — ESCALATED"
        ran = "-" if x is None else (f"{x.outcome}: {x.detail} ({x.executed_by}, "
                                     f"{x.executed_at:%H:%M:%S})")
        table.add_row(_short(a.approval_id), f"{a.action.action} {a.action.target}",
                      a.action.risk, escape(decided), escape(ran))
    return table


async def cmd_approvals(args: argparse.Namespace) -> int:
    settings = _settings()
    await _require_broker(settings)
    book = await read_book(settings.kafka(), _keyring(settings).trust, settings.approval_policy())
    items = book.waiting_for_people() if args.all else book.pending()
    if args.json:
        for a in items:
            sys.stdout.write(json_line(a.as_json()))
        sys.stdout.flush()
    else:
        console.print(render_approvals(items))
    return 0


async def _decide(args: argparse.Namespace, verdict: Verdict) -> int:
    reason = args.reason or ""
    if verdict == "deny" and not reason.strip():
        raise CliError("--reason: a denial needs a reason, e.g. --reason \"customer withdrew\"")
    settings = _settings()
    keys = _keyring(settings)
    try:
        signer, by = cli_approver(keys, settings.approver or getpass.getuser())
    except LookupError as exc:
        raise CliError(f"cannot sign a decision: {exc}") from exc
    await _require_broker(settings)
    config = settings.kafka()
    policy = settings.approval_policy()
    book = await read_book(config, keys.trust, policy)
    try:
        item = book.find(args.id)
        check_decidable(item)
        decision = make_decision(item, verdict, by, reason, signer)
    except ApprovalError as exc:
        raise CliError(str(exc), EXIT_FAILED if exc.kind == "decided" else 2) from exc
    async with Producer(config) as producer:
        event_id = await send_decision(producer, item, decision, source=CLI_SOURCE)
    first = await _first_decision(config, book, item.approval_id)
    what = f"{item.action.action} on {item.action.target} ({item.action.risk} risk)"
    if first is None:
        console.print(f"sent {decision.decision} for {item.approval_id} ({what}); it is not "
                      f"readable back yet", highlight=False)
        return 0
    if first.decision_event != event_id:
        d = first.decision
        assert d is not None
        raise CliError(f"too late: {item.approval_id} was already {d.decision} by "
                       f"{d.decided_by}; the first decision stands", EXIT_FAILED)
    console.print(f"{decision.decision}: {item.approval_id} — {what} for {item.source_id}, "
                  f"by {decision.decided_by}", highlight=False)
    if verdict == "approve":
        console.print("the executor runs it next; `counterpoint request "
                      f"{item.request_id}` shows the outcome", highlight=False)
    return 0


async def _first_decision(config: KafkaConfig, book: ApprovalBook,
                          approval_id: str) -> ActionRecord | None:
    deadline = asyncio.get_running_loop().time() + CONFIRM_S
    while True:
        item = (await read_book(config, book.trust, book.policy)).actions.get(approval_id)
        if item is not None and item.decision is not None:
            return item
        if asyncio.get_running_loop().time() >= deadline:
            return None
        await asyncio.sleep(0.2)


async def cmd_approve(args: argparse.Namespace) -> int:
    return await _decide(args, "approve")


async def cmd_deny(args: argparse.Namespace) -> int:
    return await _decide(args, "deny")


async def read_request(config: KafkaConfig, request_id: str,
                       book: ApprovalBook) -> tuple[Progress, ApprovalBook]:
    progress = Progress(request_id, "")
    topics = [t.name for t in (*WATCHED, *APPROVAL_TOPICS)]
    async for record in tail(config, topics, idle_timeout_s=0.2):
        if record.topic in {t.name for t in APPROVAL_TOPICS}:
            env = Envelope.from_headers(record.headers)
            if env is not None and env.request_id == request_id:
                book.apply(record)
        else:
            progress.apply(record)
    return progress, book


def request_json(progress: Progress, actions: list[ActionRecord]) -> dict[str, Any]:
    d, r = progress.decision, progress.result
    return {
        "request_id": progress.request_id,
        "source_id": d.subject.source_id if d else (r.source_id if r else None),
        "triage": None if d is None else {"category": d.category, "priority": d.priority,
                                          "investigations": len(d.investigations)},
        "findings": len(progress.findings),
        "result": None if r is None else r.model_dump(mode="json"),
        "actions": [a.as_json() for a in actions],
    }


def render_request(progress: Progress, actions: list[ActionRecord]) -> RenderableType:
    parts: list[RenderableType] = []
    d = progress.decision
    if d is not None:
        parts.append(Text(f"triage: {d.subject.kind} {d.subject.source_id} — {d.category}, "
                          f"priority {d.priority}, {len(d.investigations)} investigations, "
                          f"{len(progress.findings)} findings in"))
    parts.append(render_result(progress.result) if progress.result is not None
                 else Text("no result yet", style="yellow"))
    parts.append(render_actions(actions) if actions else Text("no actions proposed"))
    return Group(*parts)


async def cmd_request(args: argparse.Namespace) -> int:
    settings = _settings()
    await _require_broker(settings)
    progress, book = await read_request(settings.kafka(), args.request_id, ApprovalBook(
        _keyring(settings).trust, settings.approval_policy()))
    actions = book.for_request(args.request_id)
    if progress.decision is None and progress.result is None and not actions:
        raise CliError(f"no request {args.request_id!r} on this broker (triage has not seen "
                       "it, or the id is wrong)", EXIT_FAILED)
    if args.json:
        sys.stdout.write(json_line(request_json(progress, actions)))
        sys.stdout.flush()
    else:
        console.print(render_request(progress, actions))
    return 0
