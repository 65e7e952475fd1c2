"""`counterpoint` input errors, caught before any broker is contacted.

Each case calls `main([...])` in-process. Exit codes: 2 bad input or usage, 3 no broker.
Rich may wrap long lines (and fold long paths), so messages are compared with all whitespace
removed.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import orjson
import pytest

from counterpoint.agents.catalog import AGENT_NAMES
from counterpoint.infra import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "infra" / "examples"
ENV = ("KAFKA_BOOTSTRAP_SERVERS", "COUNTERPOINT_BROKER_HOST", "COUNTERPOINT_BROKER_PORT",
       "COUNTERPOINT_FETCH_MAX_WAIT_MS", "COUNTERPOINT_SYNTHESIS_DEADLINE_S",
       "COUNTERPOINT_KAFKA_IDEMPOTENCE", "ANTHROPIC_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT")


def _squash(text: str) -> str:
    return "".join(text.split())


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COUNTERPOINT_HOME", str(tmp_path / "home"))
    # Should anything try to reach a broker by mistake, it finds none, quickly.
    monkeypatch.setenv("COUNTERPOINT_BROKER_PORT", str(_closed_port()))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, _squash(err)


def _write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_publish_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "no-such-ticket.json"
    code, err = _run(capsys, "publish", "ticket", str(path))
    assert code == cli.EXIT_USAGE == 2
    assert _squash(str(path)) in err
    assert "cannotread" in err


def test_publish_invalid_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.json", b'{"id": "T-1", "body": ')
    code, err = _run(capsys, "publish", "ticket", str(path))
    assert code == 2
    assert _squash("not valid JSON") in err
    assert _squash(str(path)) in err


def test_publish_ticket_without_body(capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    path = _write(tmp_path, "t.json", orjson.dumps({"id": "T-1", "subject": "help"}))
    code, err = _run(capsys, "publish", "ticket", str(path))
    assert code == 2
    assert _squash("invalid ticket: body: Field required") in err


def test_publish_alert_with_no_alerts(capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    body = orjson.loads((EXAMPLES / "alert_alertmanager.json").read_bytes())
    body["alerts"] = []
    path = _write(tmp_path, "a.json", orjson.dumps(body))
    code, err = _run(capsys, "publish", "alert", str(path))
    assert code == 2
    assert _squash("invalid alert: alerts:") in err
    # The message is about the Alertmanager shape the input was meant to be.
    assert "SimpleAlert" not in err
    assert "id:Fieldrequired" not in err


def test_publish_alerts_over_the_cap(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    body = orjson.loads((EXAMPLES / "alert_alertmanager.json").read_bytes())
    body["alerts"] = body["alerts"] * 3
    path = _write(tmp_path, "storm.json", orjson.dumps(body))
    monkeypatch.setenv("COUNTERPOINT_MAX_ALERTS", "2")
    code, err = _run(capsys, "publish", "alert", str(path))
    assert code == 2
    assert _squash(f"{path}: alerts: the notification carries 3 alerts; the limit is 2") in err
    assert "COUNTERPOINT_MAX_ALERTS" in err


def test_publish_alertmanager_body_without_version(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    body = orjson.loads((EXAMPLES / "alert_alertmanager.json").read_bytes())
    del body["version"]
    path = _write(tmp_path, "a.json", orjson.dumps(body))
    code, err = _run(capsys, "publish", "alert", str(path))
    assert code == 2
    assert _squash('needs "version": "4"') in err


def test_publish_reads_stdin(capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    class _Stdin:
        buffer = io.BytesIO(b"[]")

    monkeypatch.setattr(sys, "stdin", _Stdin())
    code, err = _run(capsys, "publish", "ticket", "-")
    assert code == 2
    assert _squash("stdin: expected a JSON object, got list") in err


def test_up_with_bad_scale(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, err = _run(capsys, "up", "--scale", "billing=x")
    assert code == 2
    assert _squash("--scale 'billing=x'") in err
    assert all(name in err for name in AGENT_NAMES)
    assert time.monotonic() - started < 2.0  # failed before starting anything


@pytest.mark.parametrize("item", ["auditor=2", "billing", "billing=-1", "billing=2.5",
                                  "billing=\u00b2"])
def test_up_with_other_bad_scales(capsys: pytest.CaptureFixture[str], item: str) -> None:
    code, err = _run(capsys, "up", "--scale", item)
    assert code == 2
    assert _squash(f"--scale {item!r}") in err


def test_unknown_agent_lists_agent_names(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "agent", "auditor")
    assert code == 2
    assert "'auditor'" in err
    assert _squash(", ".join(AGENT_NAMES)) in err


def test_bad_broker_port_setting(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERPOINT_BROKER_PORT", "abc")
    code, err = _run(capsys, "publish", "ticket", str(EXAMPLES / "ticket_dual_intent.json"))
    assert code == 2
    assert "broker_port" in err
    assert "'abc'" in err
    assert "badenvironmentsetting" in err


def test_bad_broker_port_setting_for_topics(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COUNTERPOINT_BROKER_PORT", "70000")
    code, err = _run(capsys, "topics")
    assert code == 2
    assert "broker_port" in err


def test_publish_without_broker(capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    servers = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", servers)
    code, err = _run(capsys, "publish", "ticket", str(EXAMPLES / "ticket_dual_intent.json"))
    assert code == cli.EXIT_NO_BROKER == 3
    assert _squash(f"no Kafka broker answers at {servers}") in err
    assert "KAFKA_BOOTSTRAP_SERVERS" in err


def test_usage_error_from_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["publish", "invoice", "x.json"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "file", "remedy"), [
    (["agent", "executor"], "actions.db", "COUNTERPOINT_HOME"),
    (["up"], "actions.db", "COUNTERPOINT_HOME"),
    (["agent", "memory"], "memory.db", "COUNTERPOINT_MEMORY_DB"),
    (["agent", "synthesis"], "memory.db", "COUNTERPOINT_MEMORY_DB"),
    (["up"], "memory.db", "COUNTERPOINT_MEMORY_DB"),
])
def test_a_database_counterpoint_did_not_create_stops_the_command(
        tmp_path: Path, command: list[str], file: str, remedy: str) -> None:
    """A user's own SQLite file where the executor's ledger or memory goes: the process stops,
    naming the file and what to do, and the file is untouched; `up` starts no broker, no demo
    business server and no agent."""
    import os
    import sqlite3
    import subprocess
    import sys

    home = Path(os.environ["COUNTERPOINT_HOME"])
    home.mkdir(parents=True)
    path = home / file
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
    db.commit()
    db.close()
    before = path.read_bytes()
    done = subprocess.run([str(Path(sys.executable).with_name("counterpoint")), *command],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    err = _squash(done.stderr)
    assert _squash(f"{path} is an SQLite database without Counterpoint's mark") in err, err
    assert remedy in err and "Traceback" not in err
    assert path.read_bytes() == before
    port = int(os.environ["COUNTERPOINT_BROKER_PORT"])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "a broker was started"
    assert not list((home / "logs").glob("*-*.log")), "agents or services were started"
