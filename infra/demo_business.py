"""Starting the demo business server as its own supervised process, for `up` and `demo` (and
the tests) when no project file names other tools."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path

from counterpoint.infra.processes import AgentProcess, Supervisor

DB_NAME = "demo-business.db"


def command(host: str, port: int, db: Path) -> list[str]:
    script = Path(sys.executable).with_name("counterpoint-demo-business")
    found = str(script) if script.exists() else shutil.which("counterpoint-demo-business")
    base = [found] if found else [sys.executable, "-m", "counterpoint_demo"]
    return [*base, "--host", host, "--port", str(port), "--db", str(db)]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start(supervisor: Supervisor, host: str, port: int, home: Path,
          timeout_s: float = 120.0) -> AgentProcess | None:
    """Start it and wait until it accepts connections (`RuntimeError` with its log when it does
    not); None when one already answers there, which the agents then use."""
    if _answers(host, port):
        return None
    proc = supervisor.start_service("demo-business", command(host, port, home / DB_NAME))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.alive:
        if _answers(host, port):
            return proc
        time.sleep(0.1)
    tail = proc.log_path.read_text(errors="replace")[-2000:]
    supervisor.stop()  # nothing half-started stays behind
    raise RuntimeError(f"the demo business server did not start on {host}:{port} "
                       f"(log {proc.log_path}):\n{tail}")
