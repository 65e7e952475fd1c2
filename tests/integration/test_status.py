"""`counterpoint status` against a real broker and real agent processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra.broker import free_port
from counterpoint.infra.demo import example
from counterpoint.infra.processes import agent_command
from counterpoint.infra.publishing import publish
from counterpoint.topics.registry import TASKS
from tests.integration.conftest import AgentStack, embedded_broker
from tests.integration.helpers import config, send_raw, wait_results

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXE = str(Path(sys.executable).with_name("counterpoint"))


@pytest.fixture(scope="module")
def pipeline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    """One process per agent. No action waits for a person here: the approval desk holds a
    waiting approval uncommitted on purpose, which `status` rightly shows as lag."""
    stack = AgentStack(bootstrap, tmp_path_factory.mktemp("home"),
                       dict.fromkeys(AGENT_NAMES, 1),
                       extra_env={"COUNTERPOINT_APPROVAL_THRESHOLD": "high"})
    try:
        stack.wait_joined()
        yield stack
    finally:
        stack.stop()


async def status(env: dict[str, str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(EXE, "status", "--json", env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")
    data: dict[str, Any] = orjson.loads(out)
    return data


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in data["agents"]}


async def until(env: dict[str, str], ok: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        data = await status(env)
        if ok(by_name(data)) or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.5)


async def test_status_lists_every_agent_with_its_processes_and_no_lag_once_done(
        pipeline: AgentStack) -> None:
    body = orjson.loads(example("ticket_dual_intent.json"))
    body["id"] = f"T-{uuid.uuid4().hex[:8]}"
    receipt = await publish(config(pipeline.bootstrap), "ticket", orjson.dumps(body), "test")
    (_result,) = await wait_results(pipeline.bootstrap,
                                    lambda r: r.request_id == receipt.request_id)
    # Commits happen every 50 ms; poll until every group has caught up.
    data = await until(pipeline.env, lambda agents: all(a["lag"] == 0 for a in agents.values()))
    agents = by_name(data)
    assert list(agents) == list(AGENT_NAMES)
    assert "this machine" in data["processes_scope"]
    expected = {p.popen.pid: p.name for p in pipeline.supervisor.processes}
    for name, agent in agents.items():
        assert agent["group"] == f"counterpoint.{name}"
        assert agent["lag"] == 0, agent
        assert agent["partitions"] and all(p["lag"] == 0 for p in agent["partitions"])
        pids = {p["pid"] for p in agent["processes"]}
        mine = {pid for pid, n in expected.items() if n == name}
        assert mine and mine <= pids, (name, mine, pids)
        for proc in agent["processes"]:
            if proc["pid"] in mine:
                assert proc["uptime_s"] is not None and proc["uptime_s"] >= 0
                # One process per agent here, so it logged every partition of its topics.
                assert sorted(proc["partitions_from_logs"]) == sorted(
                    f"{p['topic']}[{p['partition']}]" for p in agent["partitions"])


def test_status_lists_only_the_agents_of_its_own_broker_and_home(
        pipeline: AgentStack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two stacks on one machine, on two brokers with two homes: each `status` lists its own
    agent processes and counts the other stack's apart."""
    with embedded_broker(tmp_path_factory.mktemp("broker-b")) as other_bootstrap:
        other = AgentStack(other_bootstrap, tmp_path_factory.mktemp("home-b"),
                           {"triage": 1, "knowledge": 1})
        try:
            ours = {p.popen.pid for p in pipeline.supervisor.processes if p.alive}
            theirs = {p.popen.pid for p in other.supervisor.processes if p.alive}
            assert len(theirs) == 2
            mine, seen_by_other = asyncio.run(status(pipeline.env)), asyncio.run(status(other.env))
        finally:
            other.stop()
    listed = {p["pid"] for a in mine["agents"] for p in a["processes"]}
    listed_by_other = {p["pid"] for a in seen_by_other["agents"] for p in a["processes"]}
    assert ours <= listed and not listed & theirs, (ours, theirs, listed)
    assert listed_by_other == theirs, (theirs, listed_by_other)
    assert mine["processes_of_other_stacks"] >= len(theirs)
    assert seen_by_other["processes_of_other_stacks"] >= len(ours)
    assert seen_by_other["home"] != mine["home"]


async def test_status_shows_lag_while_an_agent_is_stopped(pipeline: AgentStack) -> None:
    (knowledge,) = [p for p in pipeline.supervisor.processes if p.name == "knowledge"]
    knowledge.popen.send_signal(signal.SIGTERM)  # commits and leaves its group
    knowledge.popen.wait(timeout=30)
    topic = TASKS["knowledge"].name
    # Not a valid task: once an agent is back it becomes a dead letter, with no side effects
    # on other requests or on the modules that run next.
    partition, offset = await send_raw(pipeline.bootstrap, topic, b"status-test: not a task",
                                       key=uuid.uuid4().hex.encode())
    data = await status(pipeline.env)
    agent = by_name(data)["knowledge"]
    assert knowledge.popen.pid not in {p["pid"] for p in agent["processes"]}
    (row,) = [p for p in agent["partitions"] if p["partition"] == partition]
    assert row["end"] == offset + 1 and row["lag"] >= 1 and agent["lag"] >= 1
    assert all(a["lag"] == 0 for n, a in by_name(data).items() if n != "knowledge")

    log = pipeline.home / "logs" / "knowledge-restarted.log"
    with open(log, "ab") as out:
        fresh = subprocess.Popen(agent_command("knowledge"), stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=pipeline.env, start_new_session=True)
    try:
        data = await until(pipeline.env, lambda agents: agents["knowledge"]["lag"] == 0,
                           timeout_s=60)
        agent = by_name(data)["knowledge"]
        assert agent["lag"] == 0, (agent, log.read_text(errors="replace")[-3000:])
        assert fresh.pid in {p["pid"] for p in agent["processes"]}
    finally:
        fresh.send_signal(signal.SIGTERM)
        try:
            fresh.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fresh.kill()
            fresh.wait()


def test_status_without_a_broker_exits_3(tmp_path: Path) -> None:
    import os

    env = dict(os.environ)
    env.update({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
                "COUNTERPOINT_HOME": str(tmp_path)})
    done = subprocess.run([EXE, "status"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 3, done.stderr
    assert "no Kafka broker" in done.stderr
