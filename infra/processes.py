"""Agent OS processes for `counterpoint up` and the demo: start, watch, restart, stop.

Each process is launched as `counterpoint agent NAME`, so `ps` shows which agent it is.
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from counterpoint.agents.private_files import open_private_append, private_dir

log = logging.getLogger(__name__)


def agent_command(name: str) -> list[str]:
    script = Path(sys.executable).with_name("counterpoint")
    if script.exists():
        return [str(script), "agent", name]
    found = shutil.which("counterpoint")
    if found:
        return [found, "agent", name]
    return [sys.executable, "-m", "counterpoint.infra.cli", "agent", name]


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


class Supervisor:
    def __init__(self, logs_dir: Path, env: Mapping[str, str] | None = None,
                 restart: bool = True) -> None:
        self.logs_dir = logs_dir
        self.env = dict(env if env is not None else os.environ)
        self.restart = restart
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
            popen = subprocess.Popen(agent_command(name), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
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

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every agent (they commit and leave their groups), then SIGKILL stragglers."""
        self._stopping = True
        for proc in self.processes:
            if proc.alive:
                proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.processes:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", proc.label)
                proc.popen.kill()
                proc.popen.wait()
