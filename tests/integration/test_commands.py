"""The CLI's long-running commands as a person runs them: demo, up, broker, topics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra.broker import BrokerError, EmbeddedBroker, free_port, port_open

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EXE = str(Path(sys.executable).with_name("counterpoint"))


def _env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update({"COUNTERPOINT_HOME": str(home), "COUNTERPOINT_BROKER_PORT": str(port),
                "COUNTERPOINT_DEMO_BUSINESS_URL": f"http://127.0.0.1:{free_port()}/mcp",
                "COLUMNS": "120"})
    return env


def _agent_pids() -> dict[int, str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    pids = {}
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if "counterpoint agent " in args:
            pids[int(pid)] = args.split("counterpoint agent ", 1)[1].strip()
    return pids


def test_demo_runs_the_main_job_end_to_end(tmp_path: Path) -> None:
    """`make demo`'s command on its own embedded broker: both results, both traces, exit 0."""
    done = subprocess.run([EXE, "demo", "--timeout", "90"], env=_env(tmp_path, free_port()),
                          capture_output=True, text=True, timeout=200, check=False)
    out = " ".join(done.stdout.split())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "offline provider" in out
    assert "reply for T-1001" in out and "INV-2291" in out
    assert "runbook for c0ffee1234abcd" in out and "v2.14.0" in out
    assert out.count("status complete") == 2
    assert "trace of ticket T-1001" in out and "trace of alert c0ffee1234abcd" in out
    assert "process investigation.tasks.billing" in out or "i.tasks.billing" in out
    assert not _agent_pids_for_home(tmp_path), "demo left agent processes behind"
    ps = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True,
                        check=True).stdout
    assert f"{tmp_path}/demo-business.db" not in ps, "demo left its business server behind"


def _agent_pids_for_home(home: Path) -> list[int]:
    mine = []
    for pid in _agent_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if f"COUNTERPOINT_HOME={home}".encode() in environ:
            mine.append(pid)
    return mine


def test_up_runs_each_agent_as_its_own_process_and_sigterm_stops_all(tmp_path: Path) -> None:
    port = free_port()
    up = subprocess.Popen([EXE, "up", "--scale", "billing=2"], env=_env(tmp_path, port),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        assert up.stdout is not None
        for line in up.stdout:  # as a person would: wait for the "consuming" line
            seen.append(line)
            if "all agents consuming" in line:
                break
        assert "all agents consuming" in seen[-1], "".join(seen)
        mine = _agent_pids_for_home(tmp_path.resolve())
        names = sorted(_agent_pids()[pid] for pid in mine)
        assert names == sorted([*AGENT_NAMES, "billing"]), names
        assert port_open("127.0.0.1", port)
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:  # a failed assertion must not orphan the agents
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                up.kill()
    assert up.returncode == 0, output
    assert not _agent_pids_for_home(tmp_path.resolve()), "agents outlived `up`"
    assert not port_open("127.0.0.1", port), "the embedded broker outlived `up`"
    logs = sorted((tmp_path / "logs").glob("*-*.log"))
    stopped = [p.name for p in logs if "stopped: handled" in p.read_text()]
    assert len(stopped) == len(AGENT_NAMES) + 1, stopped  # each left its group cleanly


async def test_embedded_broker_is_reused_and_refuses_a_foreign_port(tmp_path: Path) -> None:
    first = await EmbeddedBroker("127.0.0.1", free_port()).start()
    try:
        second = await EmbeddedBroker("127.0.0.1", first.port).start()
        assert second.reused and second.process is None
        second.stop()  # a reused broker is not ours to stop
        assert port_open("127.0.0.1", first.port)
    finally:
        first.stop()
    assert not port_open("127.0.0.1", first.port)

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match="not a Kafka broker"):
            await asyncio.wait_for(EmbeddedBroker("127.0.0.1", port).start(), 30)


def test_topics_command_is_idempotent(bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "COUNTERPOINT_HOME": str(tmp_path)}
    runs = [subprocess.run([EXE, "topics"], env=env, capture_output=True, text=True,
                           timeout=60, check=False) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
        for name in ("intake.tickets", "synthesis.results", "deadletter"):
            assert name in run.stdout
    assert "created" not in runs[1].stdout  # the second run finds every topic in place


def test_sigterm_during_start_up_still_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    up = subprocess.Popen([EXE, "up"], env=_env(tmp_path, port), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    # A wait, not a speed check: `up` starts the demo business server before the agents.
    deadline = time.monotonic() + 180
    while not _agent_pids_for_home(tmp_path.resolve()) and time.monotonic() < deadline:
        time.sleep(0.1)
    up.send_signal(signal.SIGTERM)  # agents are starting, none has joined its group yet
    output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert not _agent_pids_for_home(tmp_path.resolve()), "agents outlived `up`"
    assert not port_open("127.0.0.1", port)
