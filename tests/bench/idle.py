"""The whole stack at rest: start-up time, CPU while idle, and the first request after it.

Every agent is started as `counterpoint agent NAME` (as `counterpoint up` does). Measured:

- start-up: spawning the processes -> every agent has its partitions (logged " assigned ");
- idle CPU: user+system time of every agent process and of the broker (when the bench
  started it) over `seconds`, after `settle` seconds of rest, as a share of one core;
- the first request after that rest: one dual-intent ticket published with the bus's
  producer (as `counterpoint publish` does) -> its result on synthesis.results.

The same is measured twice in one run: with the fetch mode this broker gets by default
(`auto`: adaptive on the embedded broker) and with long polls at fetch_max_wait_ms=10, which
is how every consumer fetched before adaptive fetching. The start-up baseline is as many bare
aiokafka consumer processes joining a group each (tests/bench/worker.py raw).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.bus.admin import TopicSpec, ensure_topics
from counterpoint.bus.kafka import KafkaConfig, Producer, probe_plan
from counterpoint.infra.admin import create_topics
from counterpoint.infra.demo import example
from counterpoint.infra.publishing import source_id, validate
from counterpoint.schemas.envelope import Envelope, new_event_id, now
from counterpoint.topics.registry import INTAKE_TICKETS
from tests.bench.pipeline import ResultSink
from tests.bench.processes import Children, agent_supervisor, cpu_seconds, total_cpu
from tests.bench.reader import BenchError
from tests.bench.relay import delete_topics
from tests.bench.results import ScenarioResult
from tests.bench.status import Status
from tests.bench.topics import relay_topics

JOIN_TIMEOUT_S = 120.0
FIRST_REQUEST_TIMEOUT_S = 60.0
async def _joined(count: int, joined: Callable[[], int], check: Callable[[], None],
                  what: str) -> float:
    started = time.monotonic()
    while joined() < count:
        check()
        if time.monotonic() - started > JOIN_TIMEOUT_S:
            raise BenchError(f"{what}: only {joined()} of {count} joined within "
                             f"{JOIN_TIMEOUT_S:.0f}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def bare_startup(bootstrap: str, workdir: Path, count: int) -> tuple[float, float]:
    """Seconds until `count` bare aiokafka consumer processes (one group each) are assigned,
    and the CPU seconds (user+system) they spent by then, together."""
    prefixes = [f"bench.{uuid.uuid4().hex[:8]}.join{i}" for i in range(count)]
    topics = [t for p in prefixes for t in relay_topics(p)]
    await ensure_topics(bootstrap, [TopicSpec(t.name, t.partitions) for t in topics])
    # The group timeouts the agents get on this broker: the join waits on the session timeout.
    config = KafkaConfig(bootstrap_servers=bootstrap)
    session, heartbeat = config.group_timeouts((await probe_plan(config)).tansu)
    children = Children()
    try:
        started = time.monotonic()
        for i, prefix in enumerate(prefixes):
            children.spawn(f"bare consumer {i}", ["-m", "tests.bench.worker", "raw",
                                                  "--bootstrap", bootstrap, "--prefix", prefix,
                                                  "--hop", "0", "--session-timeout-ms",
                                                  str(session), "--heartbeat-interval-ms",
                                                  str(heartbeat)],
                           workdir / "bare" / f"join{i}.log")

        def check() -> None:
            dead = children.dead()
            if dead:
                raise BenchError("; ".join(dead) + "\n" + children.logs())

        await _joined(count, children.joined, check, "bare consumers")
        return (time.monotonic() - started,
                total_cpu([proc.pid for _, proc, _ in children.procs]))
    finally:
        children.stop()
        await delete_topics(bootstrap, [t.name for t in topics])


async def _first_request(bootstrap: str, sink: ResultSink) -> float:
    template = orjson.loads(example("ticket_dual_intent.json"))
    tid = f"T-idle-{uuid.uuid4().hex[:8]}"
    raw = orjson.dumps({**template, "id": tid, "body": f"{template['body']} (ref {tid})"})
    event = validate("ticket", raw, "bench")
    event_id = new_event_id()
    sid = source_id(event)
    headers = Envelope(id=event_id, source="/counterpoint/bench", type=INTAKE_TICKETS.ce_type,
                       time=now(), request_id=event_id, subject=sid).to_headers()
    async with Producer(KafkaConfig(bootstrap), client_id="bench-idle") as producer:
        started = time.time()
        await producer.send(INTAKE_TICKETS.name, raw, key=sid.encode(), headers=headers)
        deadline = time.monotonic() + FIRST_REQUEST_TIMEOUT_S
        while event_id not in sink.first_seen:
            sink.check()
            if time.monotonic() > deadline:
                raise BenchError(f"the request after the idle phase had no result within "
                                 f"{FIRST_REQUEST_TIMEOUT_S:.0f}s")
            await asyncio.sleep(0.01)
    return sink.first_seen[event_id] - started


async def run_stack_at_rest(bootstrap: str, *, broker_pid: int | None, workdir: Path,
                            status: Status, seconds: float, settle: float,
                            mode: str) -> dict[str, float]:
    """Start every agent with COUNTERPOINT_FETCH_MODE=`mode`; measure it at rest."""
    home = workdir / f"idle-{mode}"
    env = dict(os.environ)
    env.pop("ANTHROPIC_API_KEY", None)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COUNTERPOINT_HOME": str(home),
                "COUNTERPOINT_FETCH_MODE": mode})
    if mode == "long-poll":
        env["COUNTERPOINT_FETCH_MAX_WAIT_MS"] = "10"  # how every consumer fetched before
    else:
        env.pop("COUNTERPOINT_FETCH_MAX_WAIT_MS", None)
    supervisor = agent_supervisor(home, env)
    sink = ResultSink(bootstrap)

    def check() -> None:
        dead = [p.label for p in supervisor.processes if not p.alive]
        if dead:
            logs = "\n".join(f"--- {p.label}\n{p.log_path.read_text(errors='replace')[-2000:]}"
                             for p in supervisor.processes)
            raise BenchError(f"agents exited: {', '.join(dead)}\n{logs}")

    try:
        step = status.step(f"{mode}: start {len(AGENT_NAMES)} agents", total=len(AGENT_NAMES))
        supervisor.start(dict.fromkeys(AGENT_NAMES, 1))
        startup = await _joined(len(AGENT_NAMES),
                                lambda: sum(p.joined for p in supervisor.processes), check,
                                "agents")
        # The fork server imported what the agents share (infra/forkserver.py): that is
        # start-up CPU too.
        server = supervisor.fork_server_pid
        startup_cpu = total_cpu([p.popen.pid for p in supervisor.processes]
                                + ([server] if server is not None else []))
        step.finish(f"all consuming after {startup:.1f} s ({startup_cpu:.1f} s CPU)")
        step = status.step(f"{mode}: rest {settle:g} s, then measure {seconds:g} s")
        await asyncio.sleep(settle)
        pids = [p.popen.pid for p in supervisor.processes]
        agents0, broker0 = total_cpu(pids), cpu_seconds(broker_pid) if broker_pid else 0.0
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        wall = time.monotonic() - t0
        check()
        agents = (total_cpu(pids) - agents0) / wall
        broker = (cpu_seconds(broker_pid) - broker0) / wall if broker_pid else float("nan")
        step.finish(f"agents {agents:.1%}, broker {broker:.1%} of one core")
        step = status.step(f"{mode}: first request after the rest")
        await sink.start()  # only now: the bench's own reader polls, and is not the stack
        first = await _first_request(bootstrap, sink)
        step.finish(f"result after {first * 1000:.0f} ms")
        return {"startup_s": startup, "startup_cpu_s": startup_cpu, "agents_core": agents,
                "broker_core": broker, "first_request_ms": first * 1000}
    finally:
        with contextlib.suppress(Exception):
            await sink.stop()
        supervisor.stop()


async def run_idle(bootstrap: str, *, broker_pid: int | None, workdir: Path, status: Status,
                   seconds: float = 20.0, settle: float = 5.0) -> ScenarioResult:
    result = ScenarioResult(
        "idle", f"the stack at rest ({len(AGENT_NAMES)} agent processes)",
        f"all {len(AGENT_NAMES)} agents started as `counterpoint agent NAME`; start-up = spawn "
        f"-> every agent assigned; idle = CPU (user+system) of every agent process "
        f"{'and the broker ' if broker_pid else ''}over {seconds:g} s after {settle:g} s of "
        "rest, as a share of one core; first request = one dual-intent ticket published with "
        "the bus's producer -> its result. Baseline: the same stack with long polls at "
        "fetch_max_wait_ms=10 (how every consumer fetched before), and bare aiokafka consumer "
        "processes joining a group each for start-up.")
    await create_topics(bootstrap)
    step = status.step(f"baseline: {len(AGENT_NAMES)} bare aiokafka consumers join")
    bare, bare_cpu = await bare_startup(bootstrap, workdir, len(AGENT_NAMES))
    step.finish(f"all assigned after {bare:.1f} s ({bare_cpu:.1f} s CPU)")
    adaptive = await run_stack_at_rest(bootstrap, broker_pid=broker_pid, workdir=workdir,
                                       status=status, seconds=seconds, settle=settle,
                                       mode="auto")
    polling = await run_stack_at_rest(bootstrap, broker_pid=broker_pid, workdir=workdir,
                                      status=status, seconds=seconds, settle=settle,
                                      mode="long-poll")
    result.figures = {
        "start-up to all consuming, s": (adaptive["startup_s"], bare),
        # Wall time above depends on what else the machine runs; CPU far less.
        "start-up CPU of every agent process together, s": (adaptive["startup_cpu_s"],
                                                             bare_cpu),
        "idle CPU, agents + broker, % of one core": (
            100 * (adaptive["agents_core"] + _zero(adaptive["broker_core"])),
            100 * (polling["agents_core"] + _zero(polling["broker_core"]))),
        "idle CPU, broker alone, % of one core": (100 * adaptive["broker_core"],
                                                  100 * polling["broker_core"]),
        "first request after the rest, ms": (adaptive["first_request_ms"],
                                             polling["first_request_ms"]),
    }
    result.notes.append(f"with long polls at 10 ms the stack started in "
                        f"{polling['startup_s']:.1f} s")
    if broker_pid is None:
        result.notes.append("the broker is not the bench's own process: its CPU is not counted")
    return result


def _zero(value: float) -> float:
    return 0.0 if value != value else value  # NaN (broker not measured) counts as nothing
