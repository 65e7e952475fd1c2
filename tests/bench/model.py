"""The pipeline when every model call takes a set time (`--model-delay`, 1 s by default).

Every agent runs with `ANTHROPIC_API_KEY` set, so it reasons through the real `anthropic` SDK,
against the project's Messages-API stand-in (tests/support/messages_api.py) in a process of its
own, which answers each call after the delay. `--model-requests` distinct dual-intent tickets
are published at once; the phase lasts from the first publish to the last result.

Reported: requests/s, and the stack's CPU per request: user+system time of every agent process
and of the broker (when the bench started it) from the first publish until the stack has
settled after the last result (memory, the approval desk, the executor and webhooks act after
it), divided by the requests. Left out: the stand-in's CPU (in production the model is remote)
and the demo business server's (a business system), each printed apart. Where it goes: per
agent, CPU per model call (calls counted from the results' `usage_by_step`) and per record it
handled (from its stop line); the broker per record published. The run is repeated with more
records in flight per process than the default (`COUNTERPOINT_MAX_IN_FLIGHT`), to show whether
concurrency inside a consumer is the limit. Baseline: a bare `anthropic` SDK client making the
same kind of call at the same concurrency (tests/bench/model_server.py client): its CPU per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.bus.kafka import KafkaConfig, fetch_plan
from counterpoint.bus.wake import Nudger
from counterpoint.infra.admin import create_topics
from tests.bench.pipeline import CpuMeter, ResultSink, TicketPublisher
from tests.bench.processes import ROOT, Children, agent_supervisor, cpu_seconds
from tests.bench.reader import BenchError
from tests.bench.results import ScenarioResult
from tests.bench.status import Status

DEFAULT_IN_FLIGHT = 64
JOIN_TIMEOUT_S = 120.0
WARMUP = 3
WARMUP_TIMEOUT_S = 300.0
_STOPPED = re.compile(rb"pid \d+ stopped: handled (\d+), emitted (\d+)")


async def _start_server(children: Children, workdir: Path, delay_s: float) -> tuple[str, int]:
    """The stand-in's base URL and pid."""
    ready = workdir / "model-server.url"
    server = children.spawn("Messages-API stand-in", ["-m", "tests.bench.model_server", "serve",
                                             "--delay", str(delay_s), "--ready-file",
                                             str(ready)], workdir / "model-server.log")
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        if children.dead() or time.monotonic() > deadline:
            raise BenchError("the Messages-API stand-in did not start\n" + children.logs())
        await asyncio.sleep(0.1)
    return ready.read_text().strip(), server.pid


def _sdk_baseline(base_url: str, calls: int, concurrency: int) -> float:
    out = subprocess.run([sys.executable, "-m", "tests.bench.model_server", "client",
                          "--base-url", base_url, "--calls", str(calls), "--concurrency",
                          str(concurrency)], cwd=ROOT, capture_output=True, timeout=600,
                         check=False)
    match = re.search(rb"cpu_ms_per_call ([0-9.]+)", out.stdout)
    if not match:
        raise BenchError("the bare SDK client failed\n" + out.stderr.decode(errors="replace"))
    return float(match.group(1))


async def _one_run(bootstrap: str, base_url: str, *, broker_pid: int | None, server_pid: int,
                   workdir: Path, status: Status, requests: int,
                   in_flight: int) -> dict[str, Any]:
    home = workdir / f"model-{in_flight}"
    env = dict(os.environ)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COUNTERPOINT_HOME": str(home),
                "ANTHROPIC_API_KEY": "bench-key", "ANTHROPIC_BASE_URL": base_url,
                "COUNTERPOINT_MAX_IN_FLIGHT": str(in_flight),
                # One keyring for both runs: the first run's approval requests, still held for
                # a decision, are held again by the second, not dead-lettered as untrusted.
                "COUNTERPOINT_KEYS_DIR": str(workdir / "model-keys")})
    supervisor = agent_supervisor(home, env)
    sink = ResultSink(bootstrap)
    producer: AIOKafkaProducer | None = None
    nudger: Nudger | None = None

    def check() -> None:
        dead = [p.label for p in supervisor.processes if not p.alive]
        if dead:
            raise BenchError(f"agents exited: {', '.join(dead)}")

    try:
        step = status.step(f"in flight {in_flight}: start agents", total=len(AGENT_NAMES))
        supervisor.start(dict.fromkeys(AGENT_NAMES, 1))
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while not all(p.joined for p in supervisor.processes):
            check()
            if time.monotonic() > deadline:
                raise BenchError("agents did not join in time")
            await asyncio.sleep(0.2)
        step.finish()
        producer = KafkaConfig(bootstrap).producer(f"bench-model-{uuid.uuid4().hex[:6]}")
        await producer.start()
        await sink.start()
        plan = await fetch_plan(KafkaConfig(bootstrap), producer.client)
        nudger = Nudger(plan.broker) if plan.adaptive else None
        publisher = TicketPublisher(producer, uuid.uuid4().hex[:8], nudger)
        # Each agent imports the SDK on its first call (seconds on a busy machine): not measured.
        step = status.step(f"in flight {in_flight}: warm-up", total=WARMUP)
        warm = [await publisher.send() for _ in range(WARMUP)]
        await asyncio.gather(*warm)
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        while not all(r in sink.first_seen for r in publisher.published):
            check()
            if time.monotonic() > deadline:
                raise BenchError("the warm-up requests got no result in time")
            await asyncio.sleep(0.1)
        publisher.published.clear()
        step.finish()
        step = status.step(f"in flight {in_flight}: {requests} requests at once", total=requests)
        pids = {p.name: p.popen.pid for p in supervisor.processes}
        business = next((p for p in supervisor.services if p.name == "demo-business"), None)
        meter = CpuMeter(pids, broker_pid, business.popen.pid if business else None)
        meter.begin()
        server0 = cpu_seconds(server_pid)
        started = time.time()
        acks = [await publisher.send() for _ in range(requests)]
        await asyncio.gather(*acks)
        ids = list(publisher.published)
        deadline = time.monotonic() + 120 + requests
        while (done := sum(1 for r in ids if r in sink.first_seen)) < requests:
            check()
            sink.check()
            step.update(done, f"results {done}")
            if time.monotonic() > deadline:
                raise BenchError(f"only {done} of {requests} results in time")
            await asyncio.sleep(0.05)
        seconds = max(sink.first_seen[r] for r in ids) - started
        server = cpu_seconds(server_pid) - server0
        # The work after the last result (memory, approvals, executor, webhooks) counts too.
        cpu = await meter.settle()
        broker = cpu.pop("(broker)", float("nan"))
        business_cpu = cpu.pop("(demo business server)", float("nan"))
        step.finish(f"{requests / seconds:.1f} req/s")
        calls: dict[str, int] = {}
        for rid in ids:
            for step_name, n in sink.calls.get(rid, {}).items():
                agent = step_name.split(":", 1)[0]
                calls[agent] = calls.get(agent, 0) + n
    finally:
        with contextlib.suppress(Exception):
            await sink.stop()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
        if nudger is not None:
            nudger.close()
        supervisor.stop()
    records: dict[str, int] = {}
    for proc in supervisor.processes:
        found = _STOPPED.findall(proc.log_path.read_bytes())
        if found:
            records[proc.name] = int(found[-1][0])
    return {"seconds": seconds, "cpu": cpu, "broker": broker, "server": server, "calls": calls,
            "business": business_cpu,
            "records": records, "requests": requests}


async def run_model(bootstrap: str, *, broker_pid: int | None, workdir: Path, status: Status,
                    requests: int = 400, delay_s: float = 1.0,
                    more_in_flight: int = 256) -> ScenarioResult:
    result = ScenarioResult("model", f"every model call takes {delay_s:g} s (anthropic SDK)",
                            __doc__.split("\n\n", 1)[1].replace("\n", " ") if __doc__ else "")
    await create_topics(bootstrap)
    children = Children()
    try:
        step = status.step("start the Messages-API stand-in")
        base_url, server_pid = await _start_server(children, workdir, delay_s)
        step.finish(base_url)
        step = status.step("baseline: the bare SDK client")
        sdk_ms = await asyncio.to_thread(_sdk_baseline, base_url, min(requests, 200),
                                         DEFAULT_IN_FLIGHT)
        step.finish(f"{sdk_ms:.1f} ms CPU per call")
        runs = [await _one_run(bootstrap, base_url, broker_pid=broker_pid,
                               server_pid=server_pid, workdir=workdir, status=status,
                               requests=requests, in_flight=n)
                for n in (DEFAULT_IN_FLIGHT, more_in_flight)]
    finally:
        children.stop()
    for run, n in zip(runs, (DEFAULT_IN_FLIGHT, more_in_flight), strict=True):
        stack = sum(run["cpu"].values()) + (0.0 if run["broker"] != run["broker"]
                                            else run["broker"])
        total_calls = sum(run["calls"].values())
        label = f"in flight {n}"
        result.figures[f"{label}: stack CPU per request, ms"] = (
            stack / run["requests"] * 1000,
            sdk_ms * total_calls / run["requests"])
        result.figures[f"{label}: requests/s"] = (run["requests"] / run["seconds"], float("nan"))
        parts = []
        for name, cpu in sorted(run["cpu"].items(), key=lambda kv: -kv[1]):
            calls = run["calls"].get(name, 0)
            records = run["records"].get(name, 0)
            per_call = f"{cpu / calls * 1000:.1f} ms/call" if calls else "no calls"
            per_record = f"{cpu / records * 1000:.1f} ms/record" if records else "-"
            parts.append(f"{name} {cpu:.1f}s ({per_call}, {per_record})")
        if run["broker"] == run["broker"]:
            published = sum(run["records"].values()) + run["requests"]
            parts.append(f"broker {run['broker']:.1f}s (~{run['broker'] / published * 1e3:.2f} "
                         "ms per record handled)")
        result.notes.append(f"{label}: {total_calls / run['requests']:.1f} model calls per "
                            f"request; CPU: " + "; ".join(parts))
        # Not the stack's, but it shares the machine: when it runs short of CPU, every call
        # takes longer than the delay and requests/s drops with no change in the stack.
        if run["business"] == run["business"]:
            result.notes.append(f"{label}: the demo business server (not counted above) used "
                                f"{run['business'] / run['requests'] * 1000:.1f} ms CPU per "
                                "request")
        result.notes.append(f"{label}: the stand-in (not counted above) used {run['server']:.1f}"
                            f" s CPU, {run['server'] / max(total_calls, 1) * 1000:.1f} ms per "
                            f"call, {run['server'] / run['seconds']:.0%} of one core")
    result.notes.append("baseline of 'stack CPU per request' = the bare SDK client's CPU per "
                        "call x model calls per request: what the SDK alone would cost")
    return result
