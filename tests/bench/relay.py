"""The 3-hop relay scenarios: raw aiokafka (the baseline) and the Counterpoint bus, same shape.

    driver ──► hop0 ──► [hop process 0] ──► hop1 ──► [hop process 1] ──► hop2 ──►
               [hop process 2] ──► hop3 ──► sink

Each hop is its own OS process and its own consumer group; every topic has 4 partitions. The
driver and the sink live in the bench process, so every timestamp (each message carries its
send time) is read off one clock. Phases, after a warm-up that proves the chain is joined:

- burst: N messages sent as fast as possible; throughput = N / (first send -> last receive);
- paced: `rate` messages/s for `duration` s; end-to-end latency percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from counterpoint.bus.admin import TopicSpec, ensure_topics
from counterpoint.bus.kafka import KafkaConfig, fetch_plan, nudge_when_acked
from counterpoint.bus.wake import Nudger
from counterpoint.schemas.envelope import Envelope, now
from tests.bench.processes import Children, total_cpu
from tests.bench.reader import BackgroundReader, BenchError
from tests.bench.results import Phase, ScenarioResult
from tests.bench.status import Status, Step
from tests.bench.topics import HOPS, PARTITIONS, relay_topics

RelayKind = Literal["raw", "counterpoint"]
FETCH_MAX_WAIT_MS = 10
JOIN_TIMEOUT_S = 60.0
WARMUP_TIMEOUT_S = 60.0
PACED_DRAIN_S = 30.0



def describe(kind: RelayKind, tracing: bool, metrics: bool = False) -> tuple[str, str, str]:
    """(key, title, description) of a relay scenario."""
    if kind == "raw":
        return ("raw", "raw aiokafka relay (baseline)",
                f"{HOPS} hop processes: consume → orjson.loads → orjson.dumps → produce, commit "
                f"after the produce is acked; {PARTITIONS} partitions per topic, "
                f"fetch_max_wait_ms={FETCH_MAX_WAIT_MS}")
    if metrics:
        return ("counterpoint+metrics", "Counterpoint relay + metrics",
                "as the bus relay, with metrics on in every hop (setup_metrics: the SDK's meter "
                "provider, a Prometheus reader and /metrics on a free port; no spans)")
    if tracing:
        return ("counterpoint+tracing", "Counterpoint relay + OTel SDK",
                "as above, with the OpenTelemetry SDK installed in every hop (setup_telemetry, "
                "JSONL exporter): a process and a send span per hop")
    return ("counterpoint", "Counterpoint bus relay",
            f"{HOPS} hop processes, each an Agent run by run_agent: CloudEvents headers decoded "
            "and validated, derived envelope, trace propagation (OTel API only, no SDK), "
            "dead-letter checks, commit after ack")


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Best effort: a broker that cannot delete topics keeps them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-admin")
    try:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.start(), 10)
            await asyncio.wait_for(admin.delete_topics(list(names), timeout_ms=5000), 10)
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


class RelaySink(BackgroundReader):
    """Reads the last topic without a consumer group; remembers each sequence's first arrival."""

    what = "the sink"

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self.counts: dict[int, int] = {}
        # seq -> (receive time, send time), both from time.time() in this process
        self.arrived: dict[int, tuple[float, float]] = {}

    async def start(self) -> None:
        self.consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
        await consumer.start()
        deadline = time.monotonic() + 15
        while True:
            await consumer.topics()  # refreshes metadata
            parts = consumer.partitions_for_topic(self.topic)
            if parts or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        if not parts:
            raise BenchError(f"the broker does not know topic {self.topic}")
        partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        self._task = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            received = time.time()
            for records in batch.values():
                for msg in records:
                    body = orjson.loads(msg.value)
                    seq = body["seq"]
                    self.counts[seq] = self.counts.get(seq, 0) + 1
                    if seq not in self.arrived:
                        self.arrived[seq] = (received, body["sent_at"])

    def received(self, seqs: Sequence[int]) -> int:
        self.check()
        return sum(1 for s in seqs if s in self.arrived)


class Driver:
    """Sends relay inputs to hop0: plain JSON (raw) or JSON plus CloudEvents headers."""

    def __init__(self, producer: AIOKafkaProducer, kind: RelayKind, prefix: str,
                 nudger: Nudger | None = None) -> None:
        self.producer = producer
        self.nudger = nudger  # as the bus's producers do: the first hop need not poll
        self.kind = kind
        self.prefix = prefix
        self.topic = relay_topics(prefix)[0]
        self._prepared: dict[int, tuple[bytes, list[tuple[str, bytes]] | None]] = {}

    def prepare(self, seqs: Sequence[int]) -> None:
        """Keys and envelopes are built before the clock starts; only the value is timed."""
        for seq in seqs:
            request_id = f"{self.prefix}-{seq}"
            headers = None
            if self.kind == "counterpoint":
                headers = Envelope(id=request_id, source="/counterpoint/bench",
                                   type=self.topic.ce_type, time=now(),
                                   request_id=request_id).to_headers()
            self._prepared[seq] = (request_id.encode(), headers)

    async def send(self, seq: int) -> asyncio.Future[Any]:
        key, headers = self._prepared.pop(seq)
        value = orjson.dumps({"seq": seq, "sent_at": time.time()})
        fut: asyncio.Future[Any] = await self.producer.send(self.topic.name, value, key=key,
                                                            headers=headers)
        if self.nudger is not None:
            nudge_when_acked(fut, self.nudger, self.topic.name)
        return fut


async def _wait(step: Step, progress: Callable[[], int], total: int, timeout_s: float,
                what: str, check: Callable[[], None], note: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        done = progress()
        step.update(done, note())
        if done >= total:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: only {done} of {total} arrived within {timeout_s:.0f}s")
        await asyncio.sleep(0.05)


async def _ticker(step: Step, progress: Callable[[], int], note: Callable[[], str]) -> None:
    while True:
        step.update(progress(), note())
        await asyncio.sleep(0.1)


async def _send_all(driver: Driver, seqs: Sequence[int], rate: float | None,
                    sent: list[int]) -> None:
    """Send `seqs` as fast as possible (rate None) or paced; wait for every ack."""
    acks: list[Awaitable[Any]] = []
    start = time.monotonic()
    for i, seq in enumerate(seqs):
        if rate:
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif i % 64 == 0:
            await asyncio.sleep(0)  # let the producer's sender and the sink run
        acks.append(await driver.send(seq))
        sent[0] = i + 1
    await asyncio.gather(*acks)


async def _phase(name: str, driver: Driver, sink: RelaySink, seqs: range, rate: float | None,
                 step: Step, timeout_s: float, check: Callable[[], None]) -> Phase:
    driver.prepare(seqs)
    sent = [0]
    started = time.monotonic()

    def note() -> str:
        got = sink.received(seqs)
        elapsed = max(1e-3, time.monotonic() - started)
        return f"sent {sent[0]:,}  received {got:,}  ({got / elapsed:,.0f}/s)"

    ticker = asyncio.create_task(_ticker(step, lambda: sink.received(seqs), note))
    try:
        send_start = time.time()
        await _send_all(driver, seqs, rate, sent)
        send_seconds = time.time() - send_start
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    await _wait(step, lambda: sink.received(seqs), len(seqs), timeout_s, f"{name} phase", check,
                note)
    arrivals = [sink.arrived[s] for s in seqs]
    first_send = min(sent_at for _, sent_at in arrivals)
    last_receive = max(received for received, _ in arrivals)
    phase = Phase.measure(name, "msg", len(seqs), first_send, last_receive,
                          [received - sent_at for received, sent_at in arrivals],
                          target_rate=rate,
                          duplicates=sum(sink.counts[s] - 1 for s in seqs),
                          send_seconds=send_seconds)
    step.finish(f"{phase.throughput:,.0f} msg/s, p50 {phase.p50_ms:.1f} ms, "
                f"p99 {phase.p99_ms:.1f} ms")
    return phase


async def run_relay(kind: RelayKind, bootstrap: str, *, messages: int, rate: float,
                    duration: float, workdir: Path, status: Status, tracing: bool = False,
                    metrics: bool = False, warmup: int = 40) -> ScenarioResult:
    """Start the hop processes, run warm-up, burst and (if duration > 0) paced phases."""
    key, title, description = describe(kind, tracing, metrics)
    result = ScenarioResult(key, title, description)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench.{run_id}.{key.replace('+', '-')}"
    topics = relay_topics(prefix)
    scenario_dir = workdir / key.replace("+", "-")
    traces_dir = scenario_dir / "traces"
    children = Children()
    sink = RelaySink(bootstrap, topics[-1].name)
    producer: AIOKafkaProducer | None = None
    nudger: Nudger | None = None
    try:
        step = status.step("create topics", total=len(topics))
        await ensure_topics(bootstrap, [TopicSpec(t.name, t.partitions) for t in topics])
        step.finish(f"{topics[0].name} .. {topics[-1].name}")

        step = status.step(f"start {HOPS} {kind} hop processes", total=HOPS)
        for hop in range(HOPS):
            args = ["-m", "tests.bench.worker", kind, "--bootstrap", bootstrap, "--prefix",
                    prefix, "--hop", str(hop), "--fetch-max-wait-ms", str(FETCH_MAX_WAIT_MS)]
            if tracing:
                args += ["--traces-dir", str(traces_dir)]
            if metrics:
                args.append("--metrics")
            children.spawn(f"{kind} hop {hop}", args, scenario_dir / f"hop{hop}.log")

        def check() -> None:
            dead = children.dead()
            if dead:
                raise BenchError("; ".join(dead) + "\n" + children.logs())

        await _wait(step, children.joined, HOPS, JOIN_TIMEOUT_S, "joining", check,
                    lambda: "joining consumer groups")
        step.finish("all joined their consumer groups")
        # the driver's producer is configured as the bus's own (acks=all, linger 0)
        producer = KafkaConfig(bootstrap_servers=bootstrap).producer(f"bench-driver-{run_id}")
        await producer.start()
        await sink.start()

        if kind == "counterpoint":
            plan = await fetch_plan(KafkaConfig(bootstrap), producer.client)
            nudger = Nudger(plan.broker) if plan.adaptive else None
        driver = Driver(producer, kind, prefix, nudger)
        seq = 0
        step = status.step("warm-up through all hops", total=warmup)
        await _phase("warm-up", driver, sink, range(seq, seq + warmup), None, step,
                     WARMUP_TIMEOUT_S, check)
        seq += warmup

        step = status.step(f"burst: {messages:,} messages", total=messages)
        pids = [proc.pid for _, proc, _ in children.procs]
        cpu0 = total_cpu(pids)
        phase = await _phase("burst", driver, sink, range(seq, seq + messages), None, step,
                             60 + messages / 100, check)
        result.phases.append(phase)
        # Load on the machine slows every process alike; CPU per message barely moves with it.
        result.cpu_us_per_msg = (total_cpu(pids) - cpu0) / messages / HOPS * 1e6
        seq += messages

        paced = math.floor(rate * duration)
        if paced > 0:
            step = status.step(f"paced: {rate:g} msg/s for {duration:g} s", total=paced)
            phase = await _phase("paced", driver, sink, range(seq, seq + paced), rate, step,
                                 duration + PACED_DRAIN_S, check)
            result.phases.append(phase)
            seq += paced
        await asyncio.sleep(0.3)  # a late duplicate would show up here
    finally:
        step = status.step("stop hop processes")
        try:
            with contextlib.suppress(Exception):
                await sink.stop()
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
            if nudger is not None:
                nudger.close()
        finally:
            children.stop()
            # A later scenario should not run on a broker still holding this one's records.
            await delete_topics(bootstrap, [t.name for t in topics])
        step.finish()
    result.arrivals = dict(sink.counts)
    if tracing:
        spans = sum(len(p.read_bytes().splitlines()) for p in traces_dir.glob("*.jsonl"))
        result.notes.append(f"{spans:,} spans written by the {HOPS} hop processes")
    return result
