"""Agent OS processes for `counterpoint up` and the demo: start, watch, restart, stop.

Each process is launched as `counterpoint agent NAME` (with `--config FILE` when the agent
comes from a project file), so `ps` shows which agent it is, in a session of its own (Ctrl-C
reaches only the supervisor, which stops them in order), and follows the supervisor: it stops
when the supervisor dies, whatever killed it (infra/lifeline.py). Stopping is bounded, and
reported: which stopped on SIGTERM, which had to be killed, how long.
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

from counterpoint.agents.private_files import open_private_append, private_dir
from counterpoint.infra.lifeline import supervised_env

log = logging.getLogger(__name__)


def agent_command(name: str, config: Path | None = None) -> list[str]:
    """`counterpoint agent NAME` (plus `--config FILE` for a project file's agent)."""
    tail = ["agent", name, *(["--config", str(config)] if config is not None else [])]
    script = Path(sys.executable).with_name("counterpoint")
    if script.exists():
        return [str(script), *tail]
    found = shutil.which("counterpoint")
    if found:
        return [found, *tail]
    return [sys.executable, "-m", "counterpoint.infra.cli", *tail]


@dataclass
class AgentProcess:
    name: str
    index: int
    log_path: Path
    popen: subprocess.Popen[bytes]
    log_offset: int = 0  # the log is appended to across runs; only read what this run wrote
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0

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
        text = (f"{len(self.stopped)} agent process(es) stopped on SIGTERM"
                + (f", {len(self.gone)} had already exited" if self.gone else ""))
        return text + (f"; killed after the grace: {', '.join(self.killed)}"
                       if self.killed else "")


class Supervisor:
    def __init__(self, logs_dir: Path, env: Mapping[str, str] | None = None,
                 restart: bool = True, config: Path | None = None,
                 command: Callable[[str], list[str]] | None = None) -> None:
        self.logs_dir = logs_dir
        self.config = config  # the project file the agents come from; None = built in
        self.env = dict(env if env is not None else os.environ)
        self.restart = restart
        # How an agent is started; tests start something else in its place.
        self.command = command or (lambda name: agent_command(name, self.config))
        self.processes: list[AgentProcess] = []
        self._stopping = False

    def start(self, scale: Mapping[str, int]) -> None:
        private_dir(self.logs_dir)
        for name, count in scale.items():
            for index in range(1, count + 1):
                self.processes.append(self._spawn(name, index))

    def _spawn(self, name: str, index: int) -> AgentProcess:
        log_path = self.logs_dir / f"{name}-{index}.log"
        with open_private_append(log_path) as out:
            offset = out.tell()
            popen = subprocess.Popen(self.command(name), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=supervised_env(self.env),
                                     start_new_session=True)
        return AgentProcess(name, index, log_path, popen, log_offset=offset)

    async def watch(self, stop: asyncio.Event, interval_s: float = 0.5) -> None:
        """Restart agents that die on their own until `stop` is set."""
        while not stop.is_set():
            for i, proc in enumerate(self.processes):
                if proc.alive or self._stopping or not self.restart:
                    continue
                log.warning("%s exited with code %s; restarting (see %s)", proc.label,
                            proc.popen.returncode, proc.log_path)
                fresh = self._spawn(proc.name, proc.index)
                fresh.restarts = proc.restarts + 1
                self.processes[i] = fresh
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    def stop(self, timeout_s: float = 15.0) -> StopReport:
        """SIGTERM every agent (they commit and stop), then SIGKILL what is left at the
        deadline; at most `timeout_s` plus the kills."""
        self._stopping = True
        started = time.monotonic()
        gone = [p.label for p in self.processes if not p.alive]
        for proc in self.processes:
            if proc.alive:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = started + timeout_s
        stopped, killed = [], []
        for proc in self.processes:
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
