"""`counterpoint up` killed: its agents, its embedded broker and the demo business server die
with it.

Real `up` processes on their own embedded broker and home. The test notes every process below
`up` (agents, broker and demo business server, by pid), kills `up` the way a script or the OOM
killer would, and polls until none of them is left; survivors are killed in a finally, so a
failure leaves nothing behind on a shared machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra.broker import free_port, port_open
from counterpoint.infra.demo_business import DB_NAME
from tests.support.procs import (
    cmdline,
    descendants,
    environ,
    kill_survivors,
    parent_of,
    reap,
    wait_gone,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300),
              pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks /proc")]

EXE = str(Path(sys.executable).with_name("counterpoint"))
# Generous for a loaded 2-core machine: an orphaned agent gets 15 s to stop gracefully.
GONE_WITHIN_S = 60


def _start(home: Path, port: int, scale: dict[str, int]) -> tuple[subprocess.Popen[str], set[int]]:
    """`up` with `scale`, once every agent consumes; with the pids of everything below it."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update({"COUNTERPOINT_HOME": str(home), "COUNTERPOINT_BROKER_PORT": str(port)})
    argv = [EXE, "up", *(f"--scale={name}={n}" for name, n in scale.items())]
    up = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    seen = []
    assert up.stdout is not None
    for line in up.stdout:
        seen.append(line)
        if "all agents consuming" in line or "have not joined" in line:
            break
    assert "all agents consuming" in seen[-1], "".join(seen)
    below = descendants(up.pid)
    agents = {pid for pid in below if environ(pid).get("COUNTERPOINT_HOME") == str(home)
              and "agent" in cmdline(pid)}
    brokers = {pid for pid in below if f"tcp://127.0.0.1:{port}" in cmdline(pid)}
    # The demo business server, started because billing uses the built-in tools.
    services = {pid for pid in below if str(home / DB_NAME) in cmdline(pid)}
    assert len(agents) == sum(scale.values()), {pid: cmdline(pid) for pid in below}
    assert len(brokers) == 1, {pid: cmdline(pid) for pid in below}
    assert len(services) == 1, {pid: cmdline(pid) for pid in below}
    # Agents are forked from one warm interpreter (infra/forkserver.py), which must go too.
    servers = {pid for pid in below if "counterpoint.infra.forkserver" in cmdline(pid)}
    assert len(servers) == 1, {pid: cmdline(pid) for pid in below}
    assert {parent_of(pid) for pid in agents} == servers
    return up, agents | brokers | services | servers


def _finish(up: subprocess.Popen[str], started: set[int], home: Path, port: int) -> None:
    """After `up` was killed: nothing it started is left, and the broker's port is free."""
    try:
        up.wait(timeout=30)
        survivors = wait_gone(started, GONE_WITHIN_S)
        assert not survivors, {pid: cmdline(pid) for pid in survivors}
        assert not port_open("127.0.0.1", port), "the embedded broker's port still answers"
    finally:
        reap(up)
        kill_survivors(started, str(home))
        kill_survivors(started, f"tcp://127.0.0.1:{port}")


def test_sigkill_of_up_leaves_no_agent_no_broker_no_service(tmp_path: Path) -> None:
    port = free_port()
    scale = dict.fromkeys(AGENT_NAMES, 0) | {"triage": 1, "billing": 2, "synthesis": 1}
    up, started = _start(tmp_path, port, scale)
    try:
        up.send_signal(signal.SIGKILL)
    finally:
        _finish(up, started, tmp_path, port)


def test_sigterm_then_sigkill_two_seconds_later_leaves_nothing(tmp_path: Path) -> None:
    """A script's stop: SIGTERM, and SIGKILL if `up` is still there 2 s later, while `up` is
    still stopping its agents (it stops them before the broker)."""
    port = free_port()
    up, started = _start(tmp_path, port, dict.fromkeys(AGENT_NAMES, 1))
    try:
        up.send_signal(signal.SIGTERM)
        time.sleep(2)
        if up.poll() is None:
            up.send_signal(signal.SIGKILL)
    finally:
        _finish(up, started, tmp_path, port)
