"""The full pipeline: every agent as its own OS process, dual-intent tickets in, results out.

One dual-intent ticket becomes 9 records: the ticket on intake.tickets; triage's plan on
triage.decisions and 3 tasks (billing, account, knowledge); 3 findings; one result on
synthesis.results. Its critical path is 4 consume hops in sequence (triage -> the 3
investigators in parallel -> synthesis's join -> the bench's results reader) through 5 agent
processes; the infrastructure agent (alerts only) runs but idles.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.bus import tracing
from counterpoint.bus.fetching import Adaptive, LongPoll, sleep_until
from counterpoint.bus.kafka import KafkaConfig, fetch_plan, nudge_when_acked, probe_plan
from counterpoint.bus.wake import Listener, Nudger
from counterpoint.infra.admin import create_topics
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import source_id, validate
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.topics.registry import INTAKE_TICKETS, SYNTHESIS_RESULTS
from tests.bench.processes import agent_supervisor, cpu_seconds
from tests.bench.reader import BackgroundReader, BenchError
from tests.bench.results import Phase, ScenarioResult
from tests.bench.status import Status, Step

JOIN_TIMEOUT_S = 90.0
# Synthesis publishes a partial result after its 30 s deadline, so a phase always ends.
DRAIN_S = 60.0
# After a phase's last result, memory, the approval desk, the executor and webhooks still act on
# it: its CPU is counted until every process has been nearly still for this long (or SETTLE_MAX_S).
SETTLE_S = 1.0
SETTLE_MAX_S = 20.0

KEY = "pipeline"
TITLE = f"full pipeline ({len(AGENT_NAMES)} agent processes)"
DESCRIPTION = (
    f"all {len(AGENT_NAMES)} agents ({', '.join(AGENT_NAMES)}), one OS process each, started as "
    "`counterpoint agent NAME`; offline LLM provider; agents keep their normal OTel SDK + JSONL "
    "spans. Per request: 9 records, 4 hops in sequence (intake.tickets → triage → "
    "investigation.tasks.{billing,account,knowledge} → 3 investigators in parallel → "
    "investigation.findings (+ triage.decisions) → synthesis → synthesis.results), 5 of the "
    f"{len(AGENT_NAMES)} processes on the request path (infrastructure serves alerts; memory, "
    "the approval desk, the executor and webhooks act after the result: memory records it, the "
    "ticket's proposed actions are approval requests or policy approvals the executor runs, "
    "and webhooks POSTs nothing without a configured URL). Latency = publish → result seen."
)


class ResultSink(BackgroundReader):
    """Follows synthesis.results from its current end, without a consumer group.

    It fetches as the product's own readers do on this broker (bus/fetching.py): on the
    embedded broker, only when nudged by synthesis's producer or on the idle poll. Long polls
    at 10 ms there cost the broker about 1 ms of CPU per fetch, 100 fetches a second: a tenth of
    a core that the stack's CPU per request counted, and that its agents lacked.
    """

    what = "the results reader"

    def __init__(self, bootstrap: str) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.first_seen: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.missing: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}
        self.calls: dict[str, dict[str, int]] = {}  # request -> model calls per step
        # Set (and replaced) whenever a batch brought a first result: what closed loops wait on.
        self.arrived = asyncio.Event()
        self._wake: Listener | None = None

    async def start(self) -> None:
        config = KafkaConfig(bootstrap_servers=self.bootstrap)
        plan = await probe_plan(config)
        self.consumer = consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=plan.fetch_max_wait_ms)
        await consumer.start()
        await consumer.topics()
        parts = consumer.partitions_for_topic(SYNTHESIS_RESULTS.name) or set()
        if not parts:
            raise BenchError(f"the broker does not know topic {SYNTHESIS_RESULTS.name}")
        partitions = [TopicPartition(SYNTHESIS_RESULTS.name, p) for p in sorted(parts)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the end offsets now, before anything is published
            await consumer.position(tp)
        fetching: Adaptive | LongPoll | None = None
        if plan.adaptive:
            self._wake = Listener(plan.broker, [SYNTHESIS_RESULTS.name])
            self._wake.open()
            fetching = Adaptive.attach(consumer, self._wake, plan.fetch_max_wait_ms,
                                       config.idle_poll_max_ms / 1000)
        self._task = asyncio.create_task(self._read(fetching or LongPoll(consumer)))

    async def stop(self) -> None:
        await super().stop()
        if self._wake is not None:
            self._wake.close()
            self._wake = None

    async def _read(self, fetching: Adaptive | LongPoll) -> None:
        while True:
            if fetching.idle():
                assert self._wake is not None  # only adaptive fetching idles
                await sleep_until([self._wake.event], fetching.seconds_to_poll())
                continue
            batch = await fetching.fetch(500)
            seen = time.time()
            fresh = False
            for records in batch.values():
                for msg in records:
                    body = orjson.loads(msg.value)
                    rid = body["request_id"]
                    self.counts[rid] = self.counts.get(rid, 0) + 1
                    if rid not in self.first_seen:
                        self.first_seen[rid] = seen
                        self.status[rid] = body.get("status", "?")
                        self.missing[rid] = body.get("missing", [])
                        self.calls[rid] = {step: int(usage.get("calls", 0)) for step, usage
                                           in (body.get("usage_by_step") or {}).items()}
                        fresh = True
            if fresh:
                self.arrived.set()
                self.arrived = asyncio.Event()


class TicketPublisher:
    """What `counterpoint.infra.publishing.publish` sends, over one shared producer.

    `publish` opens a producer per call (right for a CLI, not for hundreds of requests); this
    validates the ticket and builds the same CloudEvents envelope and producer span, then sends.
    """

    def __init__(self, producer: AIOKafkaProducer, run_id: str,
                 nudger: Nudger | None = None) -> None:
        self.producer = producer
        self.nudger = nudger  # as `publish` does through the bus's producer
        self.run_id = run_id
        self.template = orjson.loads(example("ticket_dual_intent.json"))
        self.published: dict[str, float] = {}
        self._n = 0

    async def send(self) -> asyncio.Future[Any]:
        """Publish one ticket; returns its broker ack (awaitable)."""
        return (await self.send_request())[1]

    async def send_request(self) -> tuple[str, asyncio.Future[Any]]:
        """Publish one ticket: its request id and its broker ack."""
        self._n += 1
        tid = f"T-bench-{self.run_id}-{self._n}"
        # A distinct text per ticket: identical tickets would share their investigations
        # (agents/reuse.py), and the bench would measure the cache instead of the pipeline.
        raw = orjson.dumps({**self.template, "id": tid,
                            "body": f"{self.template['body']} (ref {tid})"})
        event = validate("ticket", raw, "bench")
        event_id = new_event_id()
        sid = source_id(event)
        envelope = Envelope(id=event_id, source="/counterpoint/bench", type=INTAKE_TICKETS.ce_type,
                            time=now(), request_id=event_id, subject=sid)
        headers = envelope.to_headers()
        with tracing.send_span(INTAKE_TICKETS.name, request_id=event_id, event_id=event_id):
            tracing.inject(headers)
            self.published[event_id] = time.time()
            fut: asyncio.Future[Any] = await self.producer.send(
                INTAKE_TICKETS.name, raw, key=sid.encode(), headers=headers)
        if self.nudger is not None:
            nudge_when_acked(fut, self.nudger, INTAKE_TICKETS.name)
        return event_id, fut


class CpuMeter:
    """User + system CPU of every agent process, the broker and the demo business server over a
    phase (from /proc, which load on the machine distorts less than it does wall-clock rates)."""

    def __init__(self, agents: dict[str, int], broker_pid: int | None,
                 server_pid: int | None) -> None:
        self.pids = dict(agents)
        if broker_pid is not None:
            self.pids["(broker)"] = broker_pid
        if server_pid is not None:
            self.pids["(demo business server)"] = server_pid
        self.start: dict[str, float] = {}

    def sample(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def begin(self) -> None:
        self.start = self.sample()

    async def settle(self) -> dict[str, float]:
        """CPU per process since `begin`, once the stack has (nearly) stopped working."""
        deadline = time.monotonic() + SETTLE_MAX_S
        last = self.sample()
        while time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_S)
            now_ = self.sample()
            # Idle polling costs a little: still = under 5% of one core per process.
            if all(now_[k] - last[k] < 0.05 * SETTLE_S for k in now_):
                last = now_
                break
            last = now_
        return {k: last[k] - self.start.get(k, last[k]) for k in last}


def cpu_notes(result: ScenarioResult, phase: str, cpu: dict[str, float], requests: int) -> None:
    """Stack CPU per request (agents + broker; the demo business server apart) and per agent."""
    server = cpu.pop("(demo business server)", None)
    stack = sum(cpu.values())
    result.figures[f"{phase}: stack CPU per request (agents + broker), ms"] = (
        stack / requests * 1000, float("nan"))
    parts = [f"{name} {seconds / requests * 1000:.1f}"
             for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])
             if seconds / requests * 1000 >= 0.05]
    result.notes.append(f"{phase}: CPU per request, ms: " + ", ".join(parts))
    if server is not None:
        # A service, not the stack: a business system would run elsewhere in production. On a
        # small machine it still takes CPU from the agents.
        result.notes.append(f"{phase}: the demo business server (not counted above) used "
                            f"{server / requests * 1000:.1f} ms CPU per request")


async def _requests(name: str, publisher: TicketPublisher, sink: ResultSink, count: int,
                    rate: float | None, step: Step, timeout_s: float,
                    check: Callable[[], None]) -> Phase:
    before = set(publisher.published)
    acks: list[Awaitable[Any]] = []
    started = time.monotonic()

    def mine() -> list[str]:
        return [rid for rid in publisher.published if rid not in before]

    def done() -> int:
        return sum(1 for rid in mine() if rid in sink.first_seen)

    def note() -> str:
        got = done()
        return (f"published {len(mine()):,}  results {got:,}  "
                f"({got / max(1e-3, time.monotonic() - started):,.1f}/s)")

    send_start = time.time()
    for i in range(count):
        if rate:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            step.update(done(), note())
        acks.append(await publisher.send())
    await asyncio.gather(*acks)
    send_seconds = time.time() - send_start
    deadline = time.monotonic() + timeout_s
    while done() < count:
        check()
        sink.check()
        step.update(done(), note())
        if time.monotonic() > deadline:
            raise BenchError(f"{name}: only {done()} of {count} results within {timeout_s:.0f}s")
        await asyncio.sleep(0.05)
    ids = mine()
    phase = Phase.measure(name, "req", count, min(publisher.published[r] for r in ids),
                          max(sink.first_seen[r] for r in ids),
                          [sink.first_seen[r] - publisher.published[r] for r in ids],
                          target_rate=rate,
                          duplicates=sum(sink.counts[r] - 1 for r in ids),
                          send_seconds=send_seconds)
    step.finish(f"{phase.throughput:,.1f} req/s, p50 {phase.p50_ms:.0f} ms, "
                f"p99 {phase.p99_ms:.0f} ms")
    return phase


class PipelineStack:
    """Every built-in agent as its own process, with a publisher and a results reader.

    `async with PipelineStack(...) as stack:` creates the topics, starts the agents and waits
    until each has joined its group; on exit every process is stopped whatever happened.
    """

    def __init__(self, bootstrap: str, workdir: Path, status: Status) -> None:
        self.bootstrap = bootstrap
        self.status = status
        self.run_id = uuid.uuid4().hex[:8]
        home = workdir / "pipeline"
        env = dict(os.environ)
        env.pop("ANTHROPIC_API_KEY", None)  # the bench measures the bus, not a model's latency
        # The agents fetch as they would from this broker by default (bus/fetching.py).
        env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COUNTERPOINT_HOME": str(home)})
        self.supervisor = agent_supervisor(home, env)
        self.sink = ResultSink(bootstrap)
        self._producer: AIOKafkaProducer | None = None
        self._nudger: Nudger | None = None
        self._publisher: TicketPublisher | None = None

    @property
    def publisher(self) -> TicketPublisher:
        assert self._publisher is not None, "use the stack inside `async with`"
        return self._publisher

    @property
    def pids(self) -> list[int]:
        """The agents' processes (not the demo business server: see agent_supervisor)."""
        return [p.popen.pid for p in self.supervisor.processes]

    @property
    def service_pids(self) -> list[int]:
        return [p.popen.pid for p in self.supervisor.services]

    def meter(self, broker_pid: int | None) -> CpuMeter:
        """A CPU meter over every agent, the broker and the demo business server."""
        server = next((p for p in self.supervisor.services if p.name == "demo-business"), None)
        return CpuMeter({p.label: p.popen.pid for p in self.supervisor.processes}, broker_pid,
                        server.popen.pid if server is not None else None)

    def check(self) -> None:
        dead = [p.label for p in self.supervisor.processes if not p.alive]
        if dead:
            logs = "\n".join(f"--- {p.label}\n{p.log_path.read_text(errors='replace')[-2000:]}"
                             for p in self.supervisor.processes)
            raise BenchError(f"agents exited: {', '.join(dead)}\n{logs}")

    async def __aenter__(self) -> PipelineStack:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        status, supervisor = self.status, self.supervisor
        step = status.step("create the registry's topics")
        await create_topics(self.bootstrap)
        step.finish()
        step = status.step(f"start {len(AGENT_NAMES)} agent processes", total=len(AGENT_NAMES))
        supervisor.start(dict.fromkeys(AGENT_NAMES, 1))
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while True:
            self.check()
            joined = [p for p in supervisor.processes if p.joined]
            waiting = [p.name for p in supervisor.processes if not p.joined]
            step.update(len(joined), "waiting for " + ", ".join(waiting) if waiting else "")
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"agents did not join within {JOIN_TIMEOUT_S:.0f}s: {waiting}")
            await asyncio.sleep(0.2)
        step.finish("every agent joined its consumer group")
        config = KafkaConfig(bootstrap_servers=self.bootstrap)
        self._producer = config.producer(f"bench-publisher-{self.run_id}")
        await self._producer.start()
        await self.sink.start()
        plan = await fetch_plan(config, self._producer.client)
        self._nudger = Nudger(plan.broker) if plan.adaptive else None
        self._publisher = TicketPublisher(self._producer, self.run_id, self._nudger)

    async def _stop(self) -> None:
        step = self.status.step("stop agent processes")
        try:
            with contextlib.suppress(Exception):
                await self.sink.stop()
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    await self._producer.stop()
            if self._nudger is not None:
                self._nudger.close()
        finally:
            self.supervisor.stop()
        step.finish()

    async def requests(self, name: str, count: int, rate: float | None, step: Step,
                       timeout_s: float) -> Phase:
        return await _requests(name, self.publisher, self.sink, count, rate, step, timeout_s,
                               self.check)

    def completeness(self, result: ScenarioResult, measured: list[str]) -> None:
        """Note how many of `measured` got a complete result; warn about partial ones."""
        partial = [rid for rid in measured if self.sink.status.get(rid) != "complete"]
        result.notes.append(f"{len(measured) - len(partial)} of {len(measured)} results complete")
        if partial:
            missing = [f"{rid}: {self.sink.missing.get(rid)}" for rid in partial]
            result.warnings.append(
                f"{len(partial)} partial result(s): synthesis hit its deadline before every "
                f"finding arrived ({'; '.join(missing[:5])})")


async def closed_loop(stack: PipelineStack, name: str, concurrency: int, count: int,
                      step: Step, timeout_s: float) -> Phase:
    """`count` requests with `concurrency` of them in flight: each of `concurrency` clients
    publishes a ticket, waits for its result, then publishes the next (how a caller waiting on
    each answer loads a system, and how the peer scenario drives calfkit)."""
    publisher, sink = stack.publisher, stack.sink
    latencies: list[float] = []
    ids: list[str] = []
    todo = iter(range(count))
    deadline = time.monotonic() + timeout_s

    async def client() -> None:
        for _ in todo:
            rid, ack = await publisher.send_request()
            ids.append(rid)
            await ack
            while rid not in sink.first_seen:
                if time.monotonic() > deadline:
                    raise BenchError(f"{name}: only {len(latencies)} of {count} results within "
                                     f"{timeout_s:.0f}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sink.arrived.wait(), timeout=1.0)
            latencies.append(sink.first_seen[rid] - publisher.published[rid])
            step.update(len(latencies))

    async def watch() -> None:
        while True:
            stack.check()
            sink.check()
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    try:
        first = time.time()
        await asyncio.gather(*(client() for _ in range(min(concurrency, count))))
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    phase = Phase.measure(name, "req", count, first, max(sink.first_seen[r] for r in ids),
                          latencies, duplicates=sum(sink.counts[r] - 1 for r in ids))
    step.finish(f"{phase.throughput:,.1f} req/s, p50 {phase.p50_ms:.0f} ms")
    return phase


async def run_pipeline(bootstrap: str, *, requests: int, rate: float, workdir: Path,
                       status: Status, warmup: int = 3,
                       broker_pid: int | None = None) -> ScenarioResult:
    result = ScenarioResult(KEY, TITLE, DESCRIPTION)
    async with PipelineStack(bootstrap, workdir, status) as stack:
        step = status.step("warm-up requests", total=warmup)
        await stack.requests("warm-up", warmup, None, step, DRAIN_S)
        meter = stack.meter(broker_pid)
        step = status.step(f"paced: {rate:g} req/s", total=requests)
        meter.begin()
        result.phases.append(await stack.requests("paced", requests, rate, step,
                                                  requests / rate + DRAIN_S))
        cpu_notes(result, "paced", await meter.settle(), requests)
        step = status.step(f"burst: {requests:,} requests", total=requests)
        meter.begin()
        result.phases.append(await stack.requests("burst", requests, None, step,
                                                  DRAIN_S + requests * 0.2))
        cpu_notes(result, "burst", await meter.settle(), requests)
        stack.completeness(result, list(stack.publisher.published)[warmup:])
    return result
