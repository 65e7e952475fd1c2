"""The worked examples on a real broker, one process per agent: `demo --config` for sales
outreach, and the content pipeline under `up --config` while its agents are SIGKILLed and
restarted: every brief is published exactly once (one result id), none is lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from counterpoint.bus.kafka import Producer
from counterpoint.schemas.envelope import Envelope
from tests.integration.helpers import config, read_all
from tests.integration.projects import EXE, ProjectUp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SALES = EXAMPLES / "sales_outreach" / "counterpoint.toml"
CONTENT = EXAMPLES / "content_pipeline" / "counterpoint.toml"


def test_sales_outreach_demo_runs_its_samples_to_their_results(bootstrap: str,
                                                              tmp_path: Path) -> None:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "COUNTERPOINT_HOME": str(tmp_path), "COUNTERPOINT_FETCH_MAX_WAIT_MS": "10",
           "COLUMNS": "160"}
    env.pop("COUNTERPOINT_CONFIG", None)
    done = subprocess.run([EXE, "demo", "--config", str(SALES), "--timeout", "150"], env=env,
                          capture_output=True, text=True, timeout=360, check=False)
    out = " ".join(done.stdout.split())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "offline provider" in out and "OFFLINE PLACEHOLDER" in out
    assert out.count("✓ sales.outreach") == 2, out[-3000:]
    assert "done: every sample got its result on sales.outreach" in out
    assert "trace of sample 1. sales.leads" in out and "process sales.drafts" in out
    # One process per agent, each gone afterwards.
    for name in ("researcher", "writer", "qa"):
        assert (tmp_path / "logs" / f"{name}-1.log").exists()
    assert not _pids(SALES), "the demo left agent processes behind"


def _pids(project: Path) -> dict[int, str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if "counterpoint agent " in args and str(project) in args:
            found[int(pid)] = args.split("counterpoint agent ", 1)[1].split()[0]
    return found


async def test_content_pipeline_loses_nothing_and_publishes_once_under_sigkill(
        bootstrap: str, tmp_path: Path) -> None:
    up = ProjectUp(CONTENT, bootstrap, tmp_path / "home")
    rng = random.Random(12)
    briefs = [f"B-{uuid.uuid4().hex[:6]}" for _ in range(24)]
    kills: list[str] = []
    try:
        stop = asyncio.Event()

        async def killer() -> None:
            while not stop.is_set():
                await asyncio.sleep(rng.uniform(2.5, 4.5))
                running = _pids(CONTENT)
                if running and not stop.is_set():
                    pid = rng.choice(sorted(running))
                    kills.append(running[pid])
                    os.kill(pid, signal.SIGKILL)  # `up` restarts it; redelivery does the rest

        chaos = asyncio.create_task(killer())
        async with Producer(config(bootstrap), client_id="chaos") as producer:
            for brief in briefs:  # raw JSON, as any client would publish
                await producer.send("content.briefs", orjson.dumps(
                    {"id": brief, "topic": f"topic {brief}"}), key=brief.encode())
                await asyncio.sleep(0.8)
        await asyncio.sleep(6)
        stop.set()
        await chaos
        published = await _until_all(bootstrap, set(briefs), timeout_s=180)
    finally:
        code = up.stop()
    assert kills, "nothing was killed"
    missing = set(briefs) - published.keys()
    assert not missing, f"lost {sorted(missing)} after killing {kills}\n{up.agent_logs()}"
    doubled = {b: ids for b, ids in published.items() if len(ids) != 1}
    assert not doubled, f"published under more than one id: {doubled}"
    assert code == 0, up.output()


async def _until_all(bootstrap: str, wanted: set[str],
                     timeout_s: float) -> dict[str, set[str]]:
    deadline = time.monotonic() + timeout_s
    while True:
        ids: dict[str, set[str]] = defaultdict(set)
        for record in await read_all(bootstrap, "content.published"):
            envelope = Envelope.from_headers(record.headers)
            assert envelope is not None and record.value is not None
            brief = orjson.loads(record.value)["brief_id"]
            if brief in wanted:
                ids[brief].add(envelope.id)
        if wanted <= ids.keys() or time.monotonic() > deadline:
            return dict(ids)
        await asyncio.sleep(1.0)
