"""The peer, side by side: calfkit 0.13's handoff pipeline and Counterpoint's on one broker.

Optional (`--only peer`; never in `make test` and not in the default run): it needs calfkit
from PyPI, which goes into a virtualenv of its own (.counterpoint/bench/calfkit-venv, from
tests/bench/peer-requirements.txt), never into Counterpoint's.

Both pipelines are driven the same way, in the same invocation and on the same broker: at
each concurrency C, C clients each send a request, wait for its answer, and send the next.
- calfkit: 3 agents (triage -> specialist -> writer by handoff), each a calfkit Worker process,
  with a stub model (tests/bench/peer_calfkit_app.py), called through calfkit's Client.
- Counterpoint: the full pipeline (every built-in agent as its own process, offline provider,
  tracing on; PipelineStack in tests/bench/pipeline.py) with dual-intent tickets: 9 records
  and 4 hops per request, more work than the peer's 3 model turns and 2 handoffs.
CPU per request counts the pipeline's own processes (calfkit's 3 workers and its client's
process; Counterpoint's agents, not the bench process that plays the client) and the broker's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from tests.bench.pipeline import PipelineStack, closed_loop
from tests.bench.processes import ROOT, Children, cpu_seconds, total_cpu
from tests.bench.reader import BenchError
from tests.bench.results import Phase, ScenarioResult
from tests.bench.status import Status

KEY = "peer"
TITLE = "the peer side by side: calfkit 0.13 handoff pipeline vs Counterpoint's pipeline"
DESCRIPTION = (
    "each pipeline driven by C clients that each send a request and wait for its answer, at "
    "each concurrency, on the same broker in the same run. calfkit 0.13 (its own virtualenv): 3 "
    "agents by handoff (triage → specialist → writer), one Worker process each, stub model "
    "(pydantic-ai FunctionModel, one turn per agent), called through calfkit's Client. "
    "Counterpoint: every built-in agent as its own process, offline provider, tracing on, "
    "dual-intent tickets (9 records, 4 hops per request).")
REQUIREMENTS = ROOT / "tests" / "bench" / "peer-requirements.txt"
APP = ROOT / "tests" / "bench" / "peer_calfkit_app.py"
DEFAULT_VENV = ROOT / ".counterpoint" / "bench" / "calfkit-venv"
STAMP = ".counterpoint-bench-stamp"  # in the venv: what it was built from (and that we built it)
READY_TIMEOUT_S = 180.0


def _stamp_text() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    return f"{sys.version_info.major}.{sys.version_info.minor} {digest}\n"


async def ensure_venv(venv: Path, status: Status) -> Path:
    """The peer's interpreter, installing its virtualenv first if missing or out of date.

    A folder there that this bench did not create (no stamp) is left alone: the scenario
    fails and says so rather than install into, or delete, someone else's files.
    """
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    wanted = _stamp_text()
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    if venv.exists() and not stamp.exists():
        raise BenchError(f"{venv} exists but was not made by this bench (no {STAMP}); "
                         "remove it or pass --peer-venv DIR")
    step = status.step("install calfkit into its own virtualenv")
    log = venv.parent / "calfkit-venv-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    commands = [[sys.executable, "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "-r", str(REQUIREMENTS)]]
    with open(log, "wb") as out:
        for n, command in enumerate(commands):
            step.update(note=["creating the virtualenv", "pip install -r "
                              f"{REQUIREMENTS.relative_to(ROOT)} (a minute or two)"][n])
            proc = await asyncio.create_subprocess_exec(*command, stdout=out,
                                                        stderr=subprocess.STDOUT)
            if await proc.wait() != 0:
                raise BenchError(f"installing the peer failed ({' '.join(command[:4])}…); "
                                 f"see {log}")
    stamp.write_text(wanted)  # the folder is ours from here on (see above)
    step.finish(f"calfkit installed in {venv}")
    return python


class _Driver:
    """calfkit's side: its client process, read line by line (JSON per phase)."""

    def __init__(self, python: Path, bootstrap: str, phases: list[tuple[int, int]],
                 log_path: Path) -> None:
        self.command = [str(python), str(APP), "drive", "--bootstrap", bootstrap,
                        "--warmup-timeout", str(READY_TIMEOUT_S),
                        *[a for c, n in phases for a in ("--phase", f"{c}:{n}")]]
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.log = open(self.log_path, "wb")  # noqa: SIM115 — closed in stop()
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, stdout=subprocess.PIPE, stderr=self.log, cwd=ROOT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})

    async def line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        except TimeoutError:
            raise BenchError(f"calfkit's driver said nothing for {timeout_s:.0f}s; see "
                             f"{self.log_path}") from None
        if not raw:
            await self.proc.wait()
            self.log.flush()
            raise BenchError(f"calfkit's driver exited with code {self.proc.returncode}:\n"
                             + self.log_path.read_text(errors="replace")[-3000:])
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self.log.close()


def _cpu_note(label: str, concurrency: int, phase: Phase, agents_s: float,
              broker_s: float | None, service_s: float | None = None) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds / max(1, phase.received) * 1000:.1f} ms"

    text = f"{label} at concurrency {concurrency}: {ms(agents_s)} of its processes' CPU"
    if broker_s is not None:
        text += f" + {ms(broker_s)} of the broker's"
    text += " per request"
    if service_s is not None:  # shares the machine, but in production it is elsewhere
        text += f" (and {ms(service_s)} of the demo business server's, not counted)"
    return text


async def run_calfkit(python: Path, bootstrap: str, phases: list[tuple[int, int]],
                      workdir: Path, status: Status, broker_pid: int | None,
                      result: ScenarioResult) -> list[Phase]:
    children = Children()
    logs = workdir / "peer"
    driver = _Driver(python, bootstrap, phases, logs / "calfkit-driver.log")
    measured: list[Phase] = []
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        step = status.step("calfkit: start 3 workers and wait for an answer")
        for name in ("triage", "specialist", "writer"):
            children.spawn(f"calfkit {name}", [str(APP), "worker", name, "--bootstrap",
                                               bootstrap], logs / f"calfkit-{name}.log",
                           env=env, python=str(python))
        await driver.start()
        ready = await driver.line(READY_TIMEOUT_S)
        if children.dead():
            raise BenchError("calfkit workers exited: " + "; ".join(children.dead()) + "\n"
                             + children.logs())
        step.finish(f"first answer {ready['ready']:.1f} s after the client started")
        assert driver.proc is not None
        pids = [proc.pid for _, proc, _ in children.procs] + [driver.proc.pid]
        for concurrency, count in phases:
            step = status.step(f"calfkit: concurrency {concurrency}", total=count)
            cpu0 = total_cpu(pids)
            broker0 = cpu_seconds(broker_pid) if broker_pid else None
            first = time.time()
            line = await driver.line(READY_TIMEOUT_S + count)
            phase = Phase.measure(f"calfkit c={concurrency}", "req", count, first,
                                  first + line["seconds"], line["latencies_s"])
            if line["wrong"]:
                result.warnings.append(f"calfkit: {line['wrong']} answers were not the stub "
                                       "model's")
            broker = cpu_seconds(broker_pid) - broker0 if broker_pid and broker0 is not None \
                else None
            result.notes.append(_cpu_note("calfkit", concurrency, phase,
                                          total_cpu(pids) - cpu0, broker))
            step.finish(f"{phase.throughput:,.1f} req/s, p50 {phase.p50_ms:.0f} ms")
            measured.append(phase)
    finally:
        await driver.stop()
        children.stop()
    return measured


async def run_counterpoint(bootstrap: str, phases: list[tuple[int, int]], workdir: Path,
                           status: Status, broker_pid: int | None,
                           result: ScenarioResult) -> list[Phase]:
    measured: list[Phase] = []
    async with PipelineStack(bootstrap, workdir, status) as stack:
        step = status.step("Counterpoint: warm-up requests", total=3)
        await stack.requests("warm-up", 3, None, step, 60.0)
        for concurrency, count in phases:
            step = status.step(f"Counterpoint: concurrency {concurrency}", total=count)
            cpu0, service0 = total_cpu(stack.pids), total_cpu(stack.service_pids)
            broker0 = cpu_seconds(broker_pid) if broker_pid else None
            phase = await closed_loop(stack, f"Counterpoint c={concurrency}", concurrency,
                                      count, step, 60.0 + count)
            broker = cpu_seconds(broker_pid) - broker0 if broker_pid and broker0 is not None \
                else None
            result.notes.append(_cpu_note("Counterpoint", concurrency, phase,
                                          total_cpu(stack.pids) - cpu0, broker,
                                          total_cpu(stack.service_pids) - service0))
            measured.append(phase)
        stack.completeness(result, list(stack.publisher.published)[3:])
    return measured


async def run_peer(bootstrap: str, *, workdir: Path, status: Status, broker_pid: int | None,
                   phases: list[tuple[int, int]], venv: Path = DEFAULT_VENV) -> ScenarioResult:
    result = ScenarioResult(KEY, TITLE, DESCRIPTION)
    python = await ensure_venv(venv, status)
    ours = await run_counterpoint(bootstrap, phases, workdir, status, broker_pid, result)
    theirs = await run_calfkit(python, bootstrap, phases, workdir, status, broker_pid, result)
    for (concurrency, _), mine, peer in zip(phases, ours, theirs, strict=True):
        result.phases += [mine, peer]
        result.figures[f"req/s at concurrency {concurrency}: Counterpoint vs calfkit"] = (
            mine.throughput, peer.throughput)
        result.figures[f"p50 ms at concurrency {concurrency}: Counterpoint vs calfkit"] = (
            mine.p50_ms, peer.p50_ms)
    return result
