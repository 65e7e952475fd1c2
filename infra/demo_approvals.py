"""The demo's approval step: every action waiting for a person is approved by the demo itself
(and says so), then the executor's outcomes are shown, one per action.

The demo decides as a person like the CLI does: signed with the CLI's key, under the identity
it is given (DEMO_APPROVER, unless the trust binds that key to someone)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from rich.console import Console
from rich.rule import Rule

from counterpoint.agents.approval_policy import ApprovalPolicy
from counterpoint.agents.signing import Keyring
from counterpoint.bus.kafka import KafkaConfig, Producer, tail
from counterpoint.infra.approvals import (
    ApprovalBook,
    cli_approver,
    make_decision,
    read_book,
    send_decision,
)
from counterpoint.infra.approvals_cli import render_actions
from counterpoint.infra.progress import Progress
from counterpoint.schemas.envelope import Envelope
from counterpoint.topics.registry import ACTIONS_EXECUTED

DEMO_APPROVER = "demo (auto-approved)"


async def _book_when(config: KafkaConfig, keys: Keyring, policy: ApprovalPolicy,
                     ready: Callable[[ApprovalBook], bool],
                     timeout_s: float) -> tuple[ApprovalBook, bool]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        book = await read_book(config, keys.trust, policy)
        if ready(book) or asyncio.get_running_loop().time() >= deadline:
            return book, ready(book)
        await asyncio.sleep(0.3)


async def _outcome_copies(config: KafkaConfig, action_ids: set[str]) -> Counter[str]:
    """Distinct actions.executed event ids per action: 1 means it ran (or was skipped) once."""
    ids: dict[str, set[str]] = {}
    async for record in tail(config, [ACTIONS_EXECUTED.name], idle_timeout_s=0.2):
        env = Envelope.from_headers(record.headers)
        if env is None or record.value is None:
            continue
        event = ACTIONS_EXECUTED.decode(record.value)
        if event.action_id in action_ids:
            ids.setdefault(event.action_id, set()).add(env.id)
    return Counter({aid: len(found) for aid, found in ids.items()})


async def approve_and_show(console: Console, config: KafkaConfig, tracked: list[Progress],
                           keys: Keyring, policy: ApprovalPolicy, timeout_s: float = 60.0,
                           approver: str = DEMO_APPROVER) -> bool:
    wanted = {p.request_id: len(p.result.proposed_actions) for p in tracked
              if p.result is not None}
    if not any(wanted.values()):
        return True
    console.print(Rule("approvals"))

    def proposed_all(book: ApprovalBook) -> bool:
        return all(len(book.for_request(rid)) >= n for rid, n in wanted.items())

    book, _ = await _book_when(config, keys, policy, proposed_all, timeout_s)
    pending = [a for rid in wanted for a in book.for_request(rid) if a.state == "pending"]
    signer, by = cli_approver(keys, approver)
    async with Producer(config, client_id="counterpoint-demo") as producer:
        for item in pending:
            decision = make_decision(item, "approve", by, "auto-approved by the demo", signer)
            await send_decision(producer, item, decision, source="/counterpoint/demo")
            console.print(f"[bold yellow]auto-approved by the demo[/bold yellow]: "
                          f"{item.action.action} on {item.action.target} ({item.action.risk} "
                          f"risk, approval {item.approval_id[:12]}) — a person would run "
                          f"`counterpoint approve {item.approval_id[:12]}`", highlight=False)

    def all_ran(book: ApprovalBook) -> bool:
        return all(a.executed is not None for rid in wanted for a in book.for_request(rid))

    book, ok = await _book_when(config, keys, policy, all_ran, timeout_s)
    items = [a for rid in wanted for a in book.for_request(rid)]
    copies = await _outcome_copies(config, {a.approval_id for a in items})
    for p in tracked:
        mine = book.for_request(p.request_id)
        if mine:
            console.print(render_actions(mine))
    once = sum(1 for a in items if copies.get(a.approval_id) == 1)
    console.print(f"executor: {once} of {len(items)} actions have exactly one outcome "
                  "(an action id runs at most once, however often its approval arrives)")
    return ok and once == len(items)

