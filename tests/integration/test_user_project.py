"""A project of a user's own (tests/support/words_project) on a real broker: `up --config`
starts each agent as its own process, topics come from the agents' declarations, raw JSON
from a foreign Kafka client enters through the user's intake topic, and `results`, `status`,
`trace` and `deadletter` work for it unchanged."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from counterpoint.bus.deadletter import DeadLetter
from counterpoint.schemas.envelope import Envelope
from tests.integration.helpers import collect, wait_deadletters
from tests.integration.projects import EXE, ProjectUp

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

WORDS = Path(__file__).resolve().parents[1] / "support" / "words_project" / "counterpoint.toml"


@pytest.fixture(scope="module")
def words(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProjectUp]:
    up = ProjectUp(WORDS, bootstrap, tmp_path_factory.mktemp("words-home"))
    try:
        yield up
    finally:
        assert up.stop() == 0, up.output()


def _produce(bootstrap: str, value: bytes, key: str) -> None:
    from confluent_kafka import Producer  # a foreign client: raw JSON, no envelope

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("words.phrases", key=key, value=value)
    assert producer.flush(15) == 0


def _agent_args() -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True,
                         check=True).stdout
    return [line.split("counterpoint agent ", 1)[1] for line in out.splitlines()
            if "counterpoint agent " in line and str(WORDS) in line]


def test_each_agent_runs_as_its_own_named_process(words: ProjectUp) -> None:
    args = sorted(_agent_args())
    assert args == sorted([f"counter --config {WORDS}"] * 2 + [f"shouter --config {WORDS}"])


async def test_raw_json_flows_through_the_users_agents_to_a_result(words: ProjectUp,
                                                                  bootstrap: str) -> None:
    phrase_id = f"P-{uuid.uuid4().hex[:8]}"
    _produce(bootstrap, json.dumps({"id": phrase_id, "text": "hello raw world"}).encode(),
             phrase_id)
    records = await collect(bootstrap, "words.counted",
                            lambda rs: any(phrase_id.encode() in (r.value or b"") for r in rs),
                            timeout_s=60)
    (record,) = [r for r in records if phrase_id.encode() in (r.value or b"")]
    envelope = Envelope.from_headers(record.headers)
    assert envelope is not None

    # `results` shows the project's results topic; the settings reached the factory ("!").
    results = words.json_lines("results", "--json", "--request", envelope.request_id)
    assert results == [{"id": phrase_id, "text": "HELLO RAW WORLD!", "words": 3}]

    spans = _trace(words, envelope.request_id)
    services = {s["service.name"] for s in spans}
    assert {"shouter", "counter"} <= services, services
    assert len({s["trace_id"] for s in spans}) == 1


def _trace(words: ProjectUp, request_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        done = words.cli("trace", request_id, "--json", config=False, check=False)
        spans = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        if {"shouter", "counter"} <= {s["service.name"] for s in spans} or \
                time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


async def test_bad_input_on_the_users_topic_is_dead_lettered_and_the_agent_keeps_going(
        words: ProjectUp, bootstrap: str) -> None:
    bad_id = f"P-bad-{uuid.uuid4().hex[:8]}"
    _produce(bootstrap, json.dumps({"id": bad_id}).encode(), bad_id)  # no text
    (letter,) = await wait_deadletters(bootstrap, lambda d: d.record.key == bad_id.encode(), 1)
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.source_topic, letter.agent) == (
        "schema-violation", "words.phrases", "shouter")
    assert "text: Field required" in letter.message
    listed = words.json_lines("deadletter", "list", "--source-topic", "words.phrases",
                              "--json", config=False)
    assert any(item["reason"] == "schema-violation" for item in listed), listed

    good_id = f"P-{uuid.uuid4().hex[:8]}"
    _produce(bootstrap, json.dumps({"id": good_id, "text": "still here"}).encode(), good_id)
    records = await collect(bootstrap, "words.counted",
                            lambda rs: any(good_id.encode() in (r.value or b"") for r in rs),
                            timeout_s=60)
    assert any(good_id.encode() in (r.value or b"") for r in records)


def test_status_learns_the_agents_from_the_project(words: ProjectUp) -> None:
    deadline = time.monotonic() + 30
    while True:
        data = json.loads(words.cli("status", "--json").stdout)
        agents = {a["name"]: a for a in data["agents"]}
        if all(a["lag"] == 0 for a in agents.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert list(agents) == ["shouter", "counter"]
    assert agents["shouter"]["group"] == "words.shouter"
    assert agents["counter"]["group"] == "words.counter"
    assert len(agents["shouter"]["processes"]) == 1 and len(agents["counter"]["processes"]) == 2
    # Topics were created from the declarations: words.shouted has the 2 partitions declared.
    assert sorted(p["partition"] for p in agents["counter"]["partitions"]) == [0, 1]
    assert all(a["lag"] == 0 for a in agents.values()), agents


def test_agent_module_attr_runs_an_agent_from_any_importable_module(
        bootstrap: str, tmp_path: Path, words: ProjectUp) -> None:
    """No project file anywhere: the import string alone, the module found on PYTHONPATH."""
    env = {**words.env, "PYTHONPATH": str(WORDS.parent), "COUNTERPOINT_HOME": str(tmp_path)}
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([EXE, "agent", "wordsapp:counter"], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while " assigned " not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        # Its own name and default group: not the project's (there is none here).
        assert "counter pid" in text and "as group counterpoint.counter" in text, text
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
