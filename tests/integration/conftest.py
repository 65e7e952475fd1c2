"""Fixtures for tests against a real Kafka-protocol broker and real agent processes.

The broker is, in order of preference: the one named by KAFKA_BOOTSTRAP_SERVERS, a
testcontainers Kafka when a Docker engine answers, or the embedded broker (Tansu) on a free
port. The same tests run in all three cases.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from counterpoint.agents.tools.config import BUILTIN_ALLOWLISTS
from counterpoint.infra import demo_business
from counterpoint.infra.admin import create_topics
from counterpoint.infra.broker import EmbeddedBroker, free_port
from counterpoint.infra.processes import Supervisor

pytestmark = pytest.mark.integration


def _docker_available() -> bool:
    """True when a Docker engine answers its /_ping (unix socket or tcp DOCKER_HOST)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX)
            address: str | tuple[str, int] = host[len("unix://"):]
        elif host.startswith("tcp://"):
            name, _, port = host[len("tcp://"):].partition(":")
            sock, address = socket.socket(), (name, int(port or 2375))
        else:
            return False
        with sock:
            sock.settimeout(2)
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def external_bootstrap() -> Iterator[str | None]:
    """KAFKA_BOOTSTRAP_SERVERS, or testcontainers' Kafka when a Docker engine answers; else None."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        asyncio.run(create_topics(configured))
        yield configured
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            servers = kafka.get_bootstrap_server()
            asyncio.run(create_topics(servers))
            yield servers
        return
    yield None


@pytest.fixture(scope="module")
def bootstrap(external_bootstrap: str | None,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker for one test module: the external one when there is one, otherwise a fresh
    embedded broker per module.

    Per module so that no module inherits another's consumer groups: Tansu kept a group
    unable to form for good when its leader sent LeaveGroup during a rebalance (agents no
    longer send LeaveGroup, bus/kafka.py `_stay_until_expiry`), and a fresh broker keeps any
    such broker state from one module's teardown out of the next.
    """
    if external_bootstrap is not None:
        yield external_bootstrap
        return
    with embedded_broker(tmp_path_factory.mktemp("broker")) as servers:
        yield servers


@contextmanager
def embedded_broker(logs: Path) -> Iterator[str]:
    """A fresh embedded broker on a free port, with every registry topic created."""
    broker = EmbeddedBroker("127.0.0.1", free_port(), log_file=logs / "broker.log")
    asyncio.run(broker.start())
    try:
        asyncio.run(create_topics(broker.bootstrap_servers))
        yield broker.bootstrap_servers
    finally:
        broker.stop()


class AgentStack:
    """Real agent OS processes, each `counterpoint agent NAME`, against the test broker, with
    the demo business server (its own process, on a free port) unless a project file names
    other tools."""

    def __init__(self, bootstrap: str, home: Path, scale: Mapping[str, int],
                 extra_env: Mapping[str, str] | None = None) -> None:
        self.bootstrap = bootstrap
        self.home = home
        env = dict(os.environ)
        port = free_port()
        env.update({"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COUNTERPOINT_HOME": str(home),
                    "COUNTERPOINT_FETCH_MAX_WAIT_MS": "10",
                    "COUNTERPOINT_DEMO_BUSINESS_URL": f"http://127.0.0.1:{port}/mcp"})
        env.update(extra_env or {})
        self.env = env
        self.supervisor = Supervisor(home / "logs", env=env, restart=False)
        if any(a in BUILTIN_ALLOWLISTS for a in scale) and "COUNTERPOINT_CONFIG" not in env:
            demo_business.start(self.supervisor, "127.0.0.1", port, home)
        self.supervisor.start(scale)

    def wait_joined(self, timeout_s: float = 60.0) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [p.label for p in self.supervisor.processes if not p.alive]
            if dead:
                raise AssertionError(f"agents exited during start-up: {dead}\n{self.logs()}")
            if all(p.joined for p in self.supervisor.processes):
                return
            time.sleep(0.2)
        raise AssertionError(f"agents did not join within {timeout_s}s\n{self.logs()}")

    def all_alive(self) -> bool:
        return all(p.alive for p in self.supervisor.processes)

    def logs(self) -> str:
        return "\n".join(f"--- {p.label}\n{p.log_path.read_text(errors='replace')[-3000:]}"
                         for p in self.supervisor.processes)

    def stop(self) -> None:
        self.supervisor.stop()


@contextmanager
def running_pipeline(bootstrap: str, home: Path,
                     extra_env: Mapping[str, str] | None = None) -> Iterator[AgentStack]:
    """One process per agent of the built-in pipeline, joined, stopped on exit."""
    from counterpoint.agents.catalog import AGENT_NAMES

    stack = AgentStack(bootstrap, home, dict.fromkeys(AGENT_NAMES, 1), extra_env)
    try:
        stack.wait_joined()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def pipeline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    """One process per agent, shared by a test module."""
    with running_pipeline(bootstrap, tmp_path_factory.mktemp("home")) as stack:
        yield stack
