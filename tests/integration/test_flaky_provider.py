"""A flaky LLM provider loses no request: faults are retried, and what gives up is dead-lettered.

Every agent process runs with COUNTERPOINT_LLM_FAULT_RATE=0.3: about 30% of LLM calls fail with
a retriable rate-limit, overload or timeout error (agents/llm/faults.py). Each request must end
with exactly one result, or, where a handler hit the retry bound, with its input in `deadletter`
with an llm-* reason after the full number of attempts. The agents' shutdown lines
("... retries R") show that retries happened.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.bus.deadletter import DeadLetter
from counterpoint.bus.kafka import tail
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import publish
from counterpoint.schemas.envelope import Envelope, EnvelopeError
from counterpoint.schemas.events import Result
from counterpoint.topics.registry import DEADLETTER_NAME, SYNTHESIS_RESULTS
from tests.integration.conftest import AgentStack
from tests.integration.helpers import config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FAULT_RATE = 0.3
MAX_ATTEMPTS = 10
TICKETS = 20
ALERTS = 10
LLM_REASONS = {"llm-rate-limited", "llm-overloaded", "llm-timeout"}
STOPPED = re.compile(r"(\w+) pid \d+ stopped: handled (\d+), emitted (\d+), "
                     r"dead-lettered (\d+), retries (\d+)")
INJECTED = re.compile(r"injected fault (llm-[a-z-]+)")


@pytest.fixture(scope="module")
def flaky(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"), dict.fromkeys(AGENT_NAMES, 1),
                       extra_env={"COUNTERPOINT_LLM_FAULT_RATE": str(FAULT_RATE),
                                  "COUNTERPOINT_RETRY_MAX_ATTEMPTS": str(MAX_ATTEMPTS)})
    try:
        stack.wait_joined()
        yield stack
    finally:
        stack.stop()


@dataclass
class Ledger:
    """What came back for the requests this test published."""

    wanted: set[str]
    results: dict[str, dict[str, Result]] = field(default_factory=lambda: defaultdict(dict))
    dead: dict[str, list[DeadLetter]] = field(default_factory=lambda: defaultdict(list))

    def add(self, record: DeadLetter | tuple[Envelope, Result]) -> None:
        if isinstance(record, DeadLetter):
            try:
                env = Envelope.from_headers(record.record.headers)
            except EnvelopeError:
                return  # other modules' deliberately broken input shares this topic
            if env is not None and env.request_id in self.wanted:
                self.dead[env.request_id].append(record)
        else:
            env, result = record
            if result.request_id in self.wanted:
                self.results[result.request_id][env.id] = result

    def settled(self, request_id: str) -> bool:
        # A result, or triage gave up (then no result can come). When an investigator gives
        # up, synthesis still publishes a partial result at its deadline: wait for that.
        return bool(self.results.get(request_id)) or any(
            d.agent == "triage" for d in self.dead.get(request_id, ()))

    def all_settled(self) -> bool:
        return all(self.settled(rid) for rid in self.wanted)


async def follow(bootstrap: str, ledger: Ledger, timeout_s: float, *,
                 until_settled: bool = True) -> None:
    async def run() -> None:
        async with aclosing(tail(config(bootstrap), [SYNTHESIS_RESULTS.name, DEADLETTER_NAME],
                                 follow=True, idle_timeout_s=0.2)) as stream:
            async for record in stream:
                if record.topic == DEADLETTER_NAME:
                    ledger.add(DeadLetter.from_record(record))
                else:
                    env = Envelope.from_headers(record.headers)
                    assert env is not None and record.value is not None
                    ledger.add((env, SYNTHESIS_RESULTS.decode(record.value)))
                if until_settled and ledger.all_settled():
                    return

    with suppress(TimeoutError):
        await asyncio.wait_for(run(), timeout=timeout_s)


async def test_every_request_completes_or_is_dead_lettered_despite_llm_faults(
        flaky: AgentStack) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = config(flaky.bootstrap)
    request_ids: dict[str, str] = {}
    for i in range(TICKETS):
        body = orjson.loads(example("ticket_dual_intent.json"))
        body["id"] = f"T-flaky-{run}-{i}"
        receipt = await publish(cfg, "ticket", orjson.dumps(body), "test")
        request_ids[receipt.request_id] = "ticket"
    for i in range(ALERTS):
        alert = orjson.loads(example("alert_alertmanager.json"))
        alert["alerts"][0]["fingerprint"] = f"flaky-{run}-{i}"
        receipt = await publish(cfg, "alert", orjson.dumps(alert), "test")
        request_ids[receipt.request_id] = "alert"

    ledger = Ledger(set(request_ids))
    await follow(flaky.bootstrap, ledger, timeout_s=120)
    # A little longer, reading everything again, so a duplicate result would be seen.
    ledger = Ledger(set(request_ids))
    await follow(flaky.bootstrap, ledger, timeout_s=5, until_settled=False)

    flaky.stop()
    stats = stopped_lines(flaky)
    injected = injected_faults(flaky)

    dead = [d for letters in ledger.dead.values() for d in letters]
    partial = [rid for rid, rs in ledger.results.items()
               if any(r.status == "partial" for r in rs.values())]
    retries = sum(s["retries"] for s in stats.values())
    print(f"\nflaky provider (fault rate {FAULT_RATE}, max attempts {MAX_ATTEMPTS}): "
          f"requests {len(request_ids)}, results {sum(map(len, ledger.results.values()))} "
          f"({len(partial)} partial), dead letters {len(dead)} "
          f"{Counter((d.agent, d.reason, d.attempts) for d in dead)}, "
          f"retries {retries} {dict((n, s['retries']) for n, s in stats.items())}, "
          f"injected faults {sum(injected.values())} {dict(injected)}")

    unaccounted = [(rid, kind) for rid, kind in request_ids.items()
                   if not ledger.results.get(rid) and not ledger.dead.get(rid)]
    assert unaccounted == [], (f"{len(unaccounted)} requests have neither a result nor a dead "
                               f"letter: {unaccounted}\n{flaky.logs()}")
    duplicated = {rid: len(rs) for rid, rs in ledger.results.items() if len(rs) > 1}
    assert duplicated == {}, duplicated
    for letter in dead:
        assert letter.reason in LLM_REASONS, letter
        assert letter.attempts == MAX_ATTEMPTS, letter
    # A partial result only where an investigation gave up.
    for rid in partial:
        assert ledger.dead.get(rid), f"partial result for {rid} without a dead letter"

    assert set(stats) == set(AGENT_NAMES), f"missing shutdown lines:\n{flaky.logs()}"
    assert retries > 0
    assert retries <= sum(injected.values())


def stopped_lines(stack: AgentStack) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for proc in stack.supervisor.processes:
        for m in STOPPED.finditer(_run_log(proc.log_path, proc.log_offset)):
            out[m[1]] = {"handled": int(m[2]), "emitted": int(m[3]),
                         "deadlettered": int(m[4]), "retries": int(m[5])}
    return out


def injected_faults(stack: AgentStack) -> Counter[str]:
    found: Counter[str] = Counter()
    for proc in stack.supervisor.processes:
        found.update(INJECTED.findall(_run_log(proc.log_path, proc.log_offset)))
    return found


def _run_log(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")
