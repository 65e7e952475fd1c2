"""The bus engine alone under harsher chaos than the pipeline's: nothing is lost.

Relay processes (tests/support/relay_agent.py: the real `run_agent`, 8 partitions, records
held 0-300 ms so many are in flight) pass thousands of records on while, every 3-6 s, a relay
that has had time to join is SIGKILLed, or two are, or one is stopped with SIGTERM, or one
more joins for a moment and one leaves. Every record must come out at least once; redelivered
copies are counted, not failed. A bus that commits a record before handling it (as calfkit
does) fails here: made to, it lost 11 records of 4,000.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from counterpoint.bus.admin import TopicSpec, ensure_topics
from counterpoint.bus.decode import RawRecord
from counterpoint.bus.kafka import Producer
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from tests.integration.helpers import collect, config
from tests.support.relay_agent import ITEMS, PARTITIONS, RELAYED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RECORDS = 4000
PUBLISH_SECONDS = 40.0
# Victims are relays that have had time to join and own partitions with records in flight.
SETTLED_S = 8.0
RELAYS = 4
ROOT = Path(__file__).resolve().parents[2]


class Relays:
    def __init__(self, bootstrap: str, logs: Path) -> None:
        self.bootstrap, self.logs = bootstrap, logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started: dict[int, float] = {}

    def start(self) -> None:
        with open(self.logs / f"relay-{len(self.processes) + 1}.log", "wb") as log:
            self.processes.append(subprocess.Popen(  # the child keeps its own copy of `log`
                [sys.executable, "-m", "tests.support.relay_agent", self.bootstrap], cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        self.started[self.processes[-1].pid] = time.monotonic()

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def settled(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.alive()
                if time.monotonic() - self.started[p.pid] >= SETTLED_S]

    def kill_all(self) -> None:
        for p in self.alive():
            p.kill()
            p.wait()


@pytest.fixture
def relays(bootstrap: str, tmp_path: Path) -> Iterator[Relays]:
    asyncio.run(ensure_topics(bootstrap, [TopicSpec(ITEMS.name, PARTITIONS),
                                          TopicSpec(RELAYED.name, PARTITIONS)]))
    group = Relays(bootstrap, tmp_path)
    try:
        yield group
    finally:
        group.kill_all()


async def _send(producer: Producer, n: int, key: str) -> None:
    eid = new_event_id()
    env = Envelope(id=eid, source="/tests/relay-chaos", type=ITEMS.ce_type, time=now(),
                   request_id=eid, subject=key)
    await producer.send(ITEMS.name, orjson.dumps({"n": n, "key": key}), key=key.encode(),
                        headers=env.to_headers())


def _numbers(records: list[RawRecord]) -> Counter[int]:
    return Counter(orjson.loads(r.value or b"{}")["n"] for r in records)


async def test_records_survive_kills_stops_and_scaling_of_relays(relays: Relays) -> None:
    bootstrap = relays.bootstrap
    for _ in range(RELAYS):
        relays.start()
    async with Producer(config(bootstrap), client_id="relay-chaos") as producer:
        await _send(producer, -1, "warm-up")  # through once: the relays have joined
        warm = await collect(bootstrap, RELAYED.name, lambda rs: -1 in _numbers(rs), 120)
        assert -1 in _numbers(warm), "the relays never relayed the warm-up record"

        rng = random.Random()
        actions: Counter[str] = Counter()
        publishing = asyncio.Event()

        async def chaos() -> None:
            while not publishing.is_set():
                await asyncio.sleep(rng.uniform(3.0, 6.0))
                alive = relays.settled()
                what = rng.choice(["kill", "kill", "kill two", "term", "scale"])
                if what == "kill two" and len(alive) >= 2:
                    for p in rng.sample(alive, 2):
                        p.send_signal(signal.SIGKILL)
                    relays.start()
                    relays.start()
                elif what in ("kill", "term") and alive:
                    rng.choice(alive).send_signal(
                        signal.SIGKILL if what == "kill" else signal.SIGTERM)
                    relays.start()
                elif what == "scale":
                    relays.start()
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                    rng.choice(relays.settled() or relays.alive()).send_signal(signal.SIGTERM)
                else:
                    continue
                actions[what] += 1

        started = time.monotonic()
        chaos_task = asyncio.create_task(chaos())
        for n in range(RECORDS):
            await _send(producer, n, f"k{rng.randrange(200)}")
            if n % 50 == 49:
                await asyncio.sleep(PUBLISH_SECONDS * 50 / RECORDS)
        publishing.set()
        await chaos_task
    while len(relays.alive()) < RELAYS:
        relays.start()

    wanted = set(range(RECORDS))
    out = await collect(bootstrap, RELAYED.name, lambda rs: wanted <= _numbers(rs).keys(), 300)
    seen = _numbers(out)
    missing = sorted(wanted - seen.keys())
    copies = sum(c - 1 for n, c in seen.items() if n >= 0)
    print(f"\nrelay chaos: {RECORDS} records, {dict(actions)}, "
          f"{len(relays.processes)} relay processes in all, "
          f"{time.monotonic() - started:.0f}s until every record was out; "
          f"{copies} redelivered copies")
    assert sum(actions.values()) >= 5, f"too little chaos to prove anything: {actions}"
    assert not missing, f"{len(missing)} records never came out: {missing[:20]}"
