"""Chaos: agents are SIGKILLed at random while requests flow; nothing is lost or doubled.

Two processes per agent. A killer sends SIGKILL to a random agent process every few seconds
and the supervisor starts a replacement. Afterwards every request must have exactly one
distinct final result (redeliveries may publish the same result event again; it keeps its id),
and nothing new may be in `deadletter`.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.signing import Keyring
from counterpoint.bus.admin import group_lag
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import Producer
from counterpoint.infra.assembly import build_project
from counterpoint.infra.demo import example
from counterpoint.infra.processes import Supervisor
from counterpoint.infra.project import builtin_project
from counterpoint.infra.settings import Settings
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.schemas.events import TriageDecision
from counterpoint.schemas.identity import request_id_for
from counterpoint.topics.registry import (
    DEADLETTER_NAME,
    INTAKE_ALERTS,
    INTAKE_TICKETS,
    INVESTIGATION_FINDINGS,
    SYNTHESIS_RESULTS,
    TRIAGE_DECISIONS,
)
from tests.integration.conftest import AgentStack
from tests.integration.helpers import collect, config, read_all

pytestmark = [pytest.mark.integration, pytest.mark.timeout(720)]

REQUESTS = 300
PUBLISH_SECONDS = 40.0
KILL_EVERY_S = (3.0, 6.0)
SETTLE_TIMEOUT_S = 240.0
LATE_WAIT_S = 120.0  # only when something is missing, to tell late from lost


@pytest.fixture(scope="module")
def chaos_stack(bootstrap: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"),
                       dict.fromkeys(AGENT_NAMES, 2),
                       extra_env={"COUNTERPOINT_SYNTHESIS_DEADLINE_S": "600"})
    # Replacements for killed processes come from the supervisor, as under `counterpoint up`.
    stack.supervisor.restart = True
    try:
        stack.wait_joined(timeout_s=90)
        yield stack
    finally:
        stack.stop()


def _inputs(count: int) -> list[tuple[str, bytes, str]]:
    """(topic, value, source id): two thirds tickets, one third alerts."""
    ticket = orjson.loads(example("ticket_dual_intent.json"))
    alert = orjson.loads(example("alert_alertmanager.json"))
    out = []
    for n in range(count):
        if n % 3 == 2:
            alert["alerts"][0]["fingerprint"] = sid = f"chaos-{uuid.uuid4().hex[:12]}"
            out.append((INTAKE_ALERTS.name, orjson.dumps(alert), sid))
        else:
            ticket["id"] = sid = f"T-chaos-{uuid.uuid4().hex[:8]}"
            out.append((INTAKE_TICKETS.name, orjson.dumps(ticket), sid))
    return out


async def _publish(bootstrap: str, inputs: list[tuple[str, bytes, str]]) -> set[str]:
    request_ids = set()
    pause = PUBLISH_SECONDS / len(inputs)
    async with Producer(config(bootstrap), client_id="chaos") as producer:
        for topic, value, sid in inputs:
            event_id = new_event_id()
            # An Alertmanager alert's request id is its own (schemas/identity.py).
            rid = (request_id_for(INTAKE_ALERTS.decode(value), event_id)
                   if topic == INTAKE_ALERTS.name else event_id)
            envelope = Envelope(id=event_id, source="/tests/chaos", type="test", time=now(),
                                request_id=rid, subject=sid)
            await producer.send(topic, value, key=sid.encode(), headers=envelope.to_headers())
            request_ids.add(rid)
            await asyncio.sleep(pause)
    return request_ids


async def _kill(supervisor: Supervisor, stop: asyncio.Event,
                rng: random.Random) -> Counter[str]:
    """Every agent type in turn (shuffled), a random live process of it each time; after
    `stop`, only until every type has been killed once (eight types may outlast the
    publishing)."""
    kills: Counter[str] = Counter()
    order: list[str] = []
    while not stop.is_set() or set(kills) != set(AGENT_NAMES):
        await asyncio.sleep(rng.uniform(*KILL_EVERY_S))
        if not order:
            order = rng.sample(AGENT_NAMES, len(AGENT_NAMES))
        name = order.pop()
        alive = [p for p in supervisor.processes if p.alive and p.name == name]
        if not alive or (stop.is_set() and name in kills):
            continue
        victim = rng.choice(alive)
        victim.popen.send_signal(signal.SIGKILL)
        kills[name] += 1
        print(f"  kill #{kills.total()}: {victim.label} pid {victim.popen.pid}")
    return kills


def _by_id(records: list[RawRecord]) -> Counter[str]:
    ids: Counter[str] = Counter()
    for r in records:
        env = Envelope.from_headers(r.headers)
        if env is not None:
            ids[env.id] += 1
    return ids


async def test_sigkilled_agents_lose_nothing_and_double_nothing(chaos_stack: AgentStack) -> None:
    bootstrap = chaos_stack.bootstrap
    dead_before = len(await read_all(bootstrap, DEADLETTER_NAME))
    rng = random.Random()
    started = time.monotonic()
    stop_killing = asyncio.Event()
    watching = asyncio.Event()
    killer = asyncio.create_task(_kill(chaos_stack.supervisor, stop_killing, rng))
    restarter = asyncio.create_task(chaos_stack.supervisor.watch(watching, interval_s=0.25))

    request_ids = await _publish(bootstrap, _inputs(REQUESTS))
    stop_killing.set()
    kills = await killer

    def settled(records: list[RawRecord]) -> bool:
        seen = {e.request_id for r in records if (e := Envelope.from_headers(r.headers))}
        return request_ids <= seen

    results = await collect(bootstrap, SYNTHESIS_RESULTS.name, settled, SETTLE_TIMEOUT_S)
    elapsed = time.monotonic() - started
    watching.set()
    await restarter

    per_request: dict[str, set[str]] = defaultdict(set)
    statuses: Counter[str] = Counter()
    result_copies = 0
    for r in results:
        env = Envelope.from_headers(r.headers)
        assert env is not None and r.value is not None
        if env.request_id in request_ids:
            per_request[env.request_id].add(env.id)
            statuses[SYNTHESIS_RESULTS.decode(r.value).status] += 1
            result_copies += 1
    decisions = _by_id(await read_all(bootstrap, TRIAGE_DECISIONS.name))
    findings = _by_id(await read_all(bootstrap, INVESTIGATION_FINDINGS.name))
    dead_after = await read_all(bootstrap, DEADLETTER_NAME)
    restarts = sum(p.restarts for p in chaos_stack.supervisor.processes)

    missing = request_ids - per_request.keys()
    doubled = {rid: ids for rid, ids in per_request.items() if len(ids) != 1}
    print(f"\nchaos: {len(request_ids)} requests over {PUBLISH_SECONDS:.0f}s, "
          f"{kills.total()} SIGKILLs ({dict(kills)}), {restarts} restarts, "
          f"{elapsed:.0f}s until every result was in")
    print(f"  results: {len(per_request)} distinct for {len(request_ids)} requests, "
          f"{result_copies} result records ({result_copies - len(per_request)} redelivered "
          f"duplicates with the same id), statuses {dict(statuses)}")
    print(f"  redone upstream: {sum(c - 1 for c in decisions.values())} duplicate decisions, "
          f"{sum(c - 1 for c in findings.values())} duplicate findings (same ids, suppressed)")
    print(f"  dead letters: {len(dead_after) - dead_before} new")

    assert set(kills) == set(AGENT_NAMES), f"every agent type must have been killed: {kills}"
    if missing:
        print(await _where_they_stopped(bootstrap, missing))
        print(await _late_or_lost(bootstrap, missing, started))
    assert not missing, f"{len(missing)} requests have no result"
    assert not doubled, f"requests with more than one distinct result: {doubled}"
    assert set(statuses) == {"complete"}, statuses
    assert len(dead_after) == dead_before, [r.headers for r in dead_after[dead_before:]]


async def _where_they_stopped(bootstrap: str, missing: set[str]) -> str:
    """For each request without a result: its plan, and which planned findings exist."""
    decisions: dict[str, tuple[int, TriageDecision]] = {}
    for r in await read_all(bootstrap, TRIAGE_DECISIONS.name):
        decision = TRIAGE_DECISIONS.decode(r.value or b"")
        if decision.request_id in missing:
            decisions[decision.request_id] = (r.partition, decision)
    found: dict[str, set[str]] = defaultdict(set)
    for r in await read_all(bootstrap, INVESTIGATION_FINDINGS.name):
        finding = INVESTIGATION_FINDINGS.decode(r.value or b"")
        if finding.request_id in missing:
            found[finding.request_id].add(finding.task_id)
    # The result may be on the topic after all, missed by the test's own follow reader (or
    # arriving just now): a bug of the reader (bus.kafka.tail), or lateness, not a loss.
    reread = {e.request_id for r in await read_all(bootstrap, SYNTHESIS_RESULTS.name)
              if (e := Envelope.from_headers(r.headers))}
    lines = ["  where the requests without a result stopped:"]
    for rid in sorted(missing):
        if rid in reread:
            lines.append(f"    {rid}: its result IS on {SYNTHESIS_RESULTS.name} when read again "
                         "(the follow reader missed it, or it came after the wait)")
            continue
        if rid not in decisions:
            lines.append(f"    {rid}: no triage decision (lost before or in triage)")
            continue
        partition, decision = decisions[rid]
        planned = {i.task_id: f"{i.skill}/{i.focus}" for i in decision.investigations}
        absent = [name for task, name in planned.items() if task not in found[rid]]
        lines.append(f"    {rid}: decision on partition {partition}, "
                     f"{len(planned) - len(absent)}/{len(planned)} findings; missing {absent} "
                     "(all present = lost in synthesis)")
    # A group Tansu left stuck stalls its partitions (lag > 0): late, not lost. Lag 0 everywhere
    # with a request still missing means a record was passed over: lost.
    lines.append("  lag per agent group right now (records waiting):")
    for built in build_project(Settings(), builtin_project(), OfflineProvider(),
                               Keyring.ephemeral()):
        lags = await group_lag(bootstrap, built.agent.group_id,
                               [t.name for t in built.agent.consumes])
        waiting = {f"{p.topic}[{p.partition}]": p.lag for p in lags if p.lag}
        lines.append(f"    {built.name}: {waiting or 0}")
    return "\n".join(lines)


async def _late_or_lost(bootstrap: str, missing: set[str], started: float) -> str:
    """Wait a while longer: a result that still comes was late (a stalled group), not lost."""
    def arrived(records: list[RawRecord]) -> set[str]:
        return {e.request_id for r in records if (e := Envelope.from_headers(r.headers))}

    records = await collect(bootstrap, SYNTHESIS_RESULTS.name,
                            lambda rs: missing <= arrived(rs), LATE_WAIT_S)
    late = missing & arrived(records)
    at = time.monotonic() - started
    return (f"  after {LATE_WAIT_S:.0f}s more ({at:.0f}s from the start): {len(late)} of "
            f"{len(missing)} arrived late {sorted(late)}; never arrived: "
            f"{sorted(missing - late)}")


def test_killed_processes_were_replaced(chaos_stack: AgentStack, tmp_path: Path) -> None:
    """After the chaos, every agent still has two live processes (the supervisor's promise)."""
    time.sleep(1)
    alive = Counter(p.name for p in chaos_stack.supervisor.processes if p.alive)
    assert alive == Counter(dict.fromkeys(AGENT_NAMES, 2)), alive
