"""Child OS processes the bench starts, and stopping every one of them whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from counterpoint.infra import demo_business
from counterpoint.infra.broker import free_port
from counterpoint.infra.processes import Supervisor

ROOT = Path(__file__).resolve().parents[2]


class Children:
    """Relay workers: spawned in their own session (Ctrl-C reaches the bench, which stops them)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def spawn(self, label: str, args: Sequence[str], log_path: Path,
              env: Mapping[str, str] | None = None,
              python: str = sys.executable) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen([python, *args], cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=dict(env if env is not None else os.environ),
                                    start_new_session=True)
        self.procs.append((label, proc, log_path))
        return proc

    def joined(self) -> int:
        """How many children have logged a partition assignment."""
        return sum(1 for _, _, path in self.procs if b" assigned " in _read(path))

    def dead(self) -> list[str]:
        return [f"{label} exited with code {proc.returncode}"
                for label, proc, _ in self.procs if proc.poll() is not None]

    def logs(self, tail: int = 2000) -> str:
        return "\n".join(f"--- {path.name}\n{_read(path)[-tail:].decode(errors='replace')}"
                         for _, _, path in self.procs)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM all (they commit and leave their groups), then SIGKILL stragglers."""
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


_HZ = os.sysconf("SC_CLK_TCK")


def agent_supervisor(home: Path, env: dict[str, str]) -> Supervisor:
    """A supervisor for the built-in agents, with the demo business server they reach their
    tools on already running (its own process on a free port, like `up` starts it). The
    server is a service, not an agent: CPU figures over `supervisor.processes` leave it out,
    as a business system would be elsewhere in production."""
    port = free_port()
    env["COUNTERPOINT_DEMO_BUSINESS_URL"] = f"http://127.0.0.1:{port}/mcp"
    supervisor = Supervisor(home / "logs", env=env, restart=False)
    demo_business.start(supervisor, "127.0.0.1", port, home)
    return supervisor


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _HZ


def total_cpu(pids: Sequence[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""
