"""Agent OS processes for `counterpoint up` and the demo: start, watch, restart, stop.

Each process is launched as `counterpoint agent NAME` (with `--config FILE` when the agent
comes from a project file), so `ps` shows which agent it is, in a session of its own (Ctrl-C
reaches only the supervisor, which stops them in order), and follows the supervisor: it stops
when the supervisor dies, whatever killed it (infra/lifeline.py). Stopping is bounded, and
reported: which stopped on SIGTERM, which had to be killed, how long. Services the agents need
(the demo business server) are supervised the same way, with their own command, started
before the agents and stopped after them.

A process that exits on its own is started again. One that keeps exiting soon after it starts
(a bad setting, a tool server that is not there) is started again later each time, up to
`RESTART_MAX_DELAY_S` apart, instead of twice a second for as long as `up` runs; a process
that ran for a while before it died is restarted at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from counterpoint.agents.private_files import open_private_append, private_dir
from counterpoint.infra import forkserver
from counterpoint.infra.lifeline import guarded, supervised_env

log = logging.getLogger(__name__)

# A process that dies sooner than this after it started counts as failing to start; each such
# death in a row doubles the wait before the next start, from the base up to the maximum.
STABLE_S: Final = 10.0
RESTART_BASE_DELAY_S: Final = 0.5
RESTART_MAX_DELAY_S: Final = 30.0


def restart_delay(quick_deaths: int) -> float:
    """Seconds to wait before starting a process again whose last `quick_deaths` runs in a
    row each ended within STABLE_S of its start (0: it had been running: at once)."""
    if quick_deaths <= 0:
        return 0.0
    return min(RESTART_MAX_DELAY_S, RESTART_BASE_DELAY_S * 2.0 ** (quick_deaths - 1))


def agent_args(name: str, config: Path | None = None) -> list[str]:
    """`agent NAME` (plus `--config FILE` for a project file's agent): the CLI's arguments."""
    return ["agent", name, *(["--config", str(config)] if config is not None else [])]


def agent_command(name: str, config: Path | None = None) -> list[str]:
    """`counterpoint agent NAME` (plus `--config FILE` for a project file's agent)."""
    tail = agent_args(name, config)
    script = Path(sys.executable).with_name("counterpoint")
    if script.exists():
        return [str(script), *tail]
    found = shutil.which("counterpoint")
    if found:
        return [found, *tail]
    return [sys.executable, "-m", "counterpoint.infra.cli", *tail]


class Child(Protocol):
    """What the supervisor needs of a process: a Popen, or a child of the fork server."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


@dataclass
class AgentProcess:
    name: str
    index: int
    log_path: Path
    popen: Child
    log_offset: int = 0  # the log is appended to across runs; only read what this run wrote
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    command: list[str] | None = None  # a service's own command; None = `counterpoint agent NAME`
    quick_deaths: int = 0  # runs in a row, this one's included once it died, shorter than STABLE_S
    restart_at: float | None = None  # when a dead process is due to start again

    @property
    def label(self) -> str:
        return f"{self.name}#{self.index}"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def joined(self) -> bool:
        """True once the agent has logged its first partition assignment (see bus/kafka.py)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return b" assigned " in f.read()
        except OSError:
            return False


@dataclass(frozen=True)
class StopReport:
    stopped: list[str]  # exited within the grace after SIGTERM
    killed: list[str]  # still running at the deadline: SIGKILL
    gone: list[str]  # had exited before the stop
    seconds: float

    def summary(self) -> str:
        text = (f"{len(self.stopped)} process(es) stopped on SIGTERM"
                + (f", {len(self.gone)} had already exited" if self.gone else ""))
        return text + (f"; killed after the grace: {', '.join(self.killed)}"
                       if self.killed else "")


class Supervisor:
    def __init__(self, logs_dir: Path, env: Mapping[str, str] | None = None,
                 restart: bool = True, config: Path | None = None,
                 command: Callable[[str], list[str]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 fork: bool | None = None) -> None:
        self.logs_dir = logs_dir
        self.config = config  # the project file the agents come from; None = built in
        self.env = dict(env if env is not None else os.environ)
        self.restart = restart
        # How an agent is started; tests start something else in its place.
        self.command = command or (lambda name: agent_command(name, self.config))
        # Agents are forked from a warm interpreter where that works (infra/forkserver.py),
        # unless they are something else a test starts.
        self.fork = (command is None and forkserver.supported()) if fork is None else fork
        self._server: forkserver.ForkServer | None = None
        self.processes: list[AgentProcess] = []
        self.services: list[AgentProcess] = []
        self._stopping = False
        self._clock = clock

    def prepare(self) -> None:
        """Start the fork server now, so its imports overlap what the caller does before
        `start` (the broker, the topics); a no-op where agents are not forked."""
        if self.fork:
            private_dir(self.logs_dir)
            self._fork_server()

    def start(self, scale: Mapping[str, int]) -> None:
        private_dir(self.logs_dir)
        for name, count in scale.items():
            for index in range(1, count + 1):
                self.processes.append(self._spawn(name, index))

    def start_service(self, name: str, command: list[str]) -> AgentProcess:
        """Start a helper program (the demo business server) that dies with this process.

        Unlike an agent, a service need not be ours or know COUNTERPOINT_SUPERVISOR_PID, so it
        starts through the lifeline guard, as the embedded broker does (infra/lifeline.py)."""
        private_dir(self.logs_dir)
        service = self._spawn(name, 1, guarded(command))
        self.services.append(service)
        return service

    def _spawn(self, name: str, index: int, command: list[str] | None = None) -> AgentProcess:
        log_path = self.logs_dir / f"{name}-{index}.log"
        with open_private_append(log_path) as out:
            offset = out.tell()
            if command is None and self.fork:
                popen: Child = self._fork_server().spawn(
                    agent_args(name, self.config), self.command(name), log_path)
            else:
                popen = subprocess.Popen(command or self.command(name), stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=supervised_env(self.env), start_new_session=True)
        return AgentProcess(name, index, log_path, popen, log_offset=offset,
                            started=self._clock(), command=command)

    @property
    def fork_server_pid(self) -> int | None:
        """The fork server's pid, while it runs (its CPU is the agents' start-up too)."""
        return self._server.popen.pid if self._server is not None and self._server.alive else None

    def _fork_server(self) -> forkserver.ForkServer:
        """The running fork server, started (again, were it gone) with the agents' env."""
        if self._server is None or not self._server.alive:
            if self._server is not None:
                log.warning("the fork server exited with code %s; starting it again (see %s)",
                            self._server.popen.poll(), self.logs_dir / "forkserver.log")
            # Room in its command line for the longest agent's (a longer name is cut there).
            room = len("\0".join(self.command("?" * 64))) + 64
            self._server = forkserver.ForkServer(supervised_env(self.env),
                                                 self.logs_dir / "forkserver.log", room=room)
        return self._server

    async def watch(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        """Restart agents that die on their own until `stop` is set."""
        while not stop.is_set():
            self.restart_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    def restart_due(self) -> None:
        """One look at every process: a newly dead one gets its restart time (restart_delay),
        and one whose time has come is started again."""
        if self._stopping or not self.restart:
            return
        for group in (self.services, self.processes):
            for i, proc in enumerate(group):
                if proc.alive:
                    continue
                now = self._clock()
                if proc.restart_at is None:
                    lived = now - proc.started
                    proc.quick_deaths = proc.quick_deaths + 1 if lived < STABLE_S else 0
                    delay = restart_delay(proc.quick_deaths)
                    proc.restart_at = now + delay
                    when = ("now" if delay == 0 else f"in {delay:g} s (it exited within "
                            f"{STABLE_S:g} s of starting {proc.quick_deaths} time(s) in a row)")
                    log.warning("%s exited with code %s after %.1f s; restarting %s (see %s)",
                                proc.label, proc.popen.returncode, lived, when, proc.log_path)
                if now >= proc.restart_at:
                    fresh = self._spawn(proc.name, proc.index, proc.command)
                    fresh.restarts = proc.restarts + 1
                    fresh.quick_deaths = proc.quick_deaths
                    group[i] = fresh

    def stop(self, timeout_s: float = 15.0) -> StopReport:
        """SIGTERM every agent (they commit and stop), then SIGKILL what is left at the
        deadline; then the same for the services, which agents may use until they stop. At
        most twice `timeout_s` plus the kills."""
        self._stopping = True
        agents = self._stop(self.processes, timeout_s)
        if self._server is not None:
            self._server.close()
        services = self._stop(self.services, timeout_s)
        return StopReport(agents.stopped + services.stopped, agents.killed + services.killed,
                          agents.gone + services.gone, agents.seconds + services.seconds)

    def _stop(self, procs: list[AgentProcess], timeout_s: float) -> StopReport:
        started = time.monotonic()
        gone = [p.label for p in procs if not p.alive]
        for proc in procs:
            if proc.alive:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = started + timeout_s
        stopped, killed = [], []
        for proc in procs:
            if proc.label in gone:
                continue
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                stopped.append(proc.label)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", proc.label, timeout_s)
                proc.popen.kill()
                proc.popen.wait()
                killed.append(proc.label)
        return StopReport(stopped, killed, gone, time.monotonic() - started)
