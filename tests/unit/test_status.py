"""`counterpoint status` without a broker: /proc scanning, log parsing, assembling, drawing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.console import Console

from counterpoint.agents.catalog import AGENT_NAMES, build
from counterpoint.agents.context import AgentContext
from counterpoint.agents.llm.offline import OfflineProvider
from counterpoint.agents.signing import Keyring
from counterpoint.agents.tools.business import BusinessStore
from counterpoint.bus.admin import PartitionLag
from counterpoint.infra.assembly import build_project
from counterpoint.infra.cli import build_parser
from counterpoint.infra.project import builtin_project
from counterpoint.infra.settings import Settings
from counterpoint.infra.status import (
    LocalProcess,
    StackId,
    Status,
    agent_of,
    assemble,
    parse_assignments,
    read_assignments,
    render_status,
    scan_processes,
    stack_of,
    status_json,
)

TICKS = os.sysconf("SC_CLK_TCK")


GROUPS = {name: f"counterpoint.{name}" for name in AGENT_NAMES}


def _fake_proc(root: Path, pid: int, argv: list[str], started_s: float,
               environ: dict[str, str] | None = None, cwd: Path | None = None) -> None:
    d = root / str(pid)
    d.mkdir()
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    fields = ["S"] + ["0"] * 18 + [str(int(started_s * TICKS))] + ["0"] * 20
    (d / "stat").write_text(f"{pid} (python3 (x) y) " + " ".join(fields) + "\n")
    if environ is not None:  # without it, the process's environment cannot be read
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0"
                                             for k, v in environ.items()))
        (d / "cwd").symlink_to(cwd or root)


def test_status_learns_groups_and_topics_from_the_project(tmp_path: Path) -> None:
    with BusinessStore.open(tmp_path / "b.db") as store:
        ctx = AgentContext(store=store, provider=OfflineProvider())
        built = {b.name: b for b in build_project(Settings(), builtin_project(),
                                                  OfflineProvider(), Keyring.ephemeral())}
        assert list(built) == list(AGENT_NAMES)
        for name in AGENT_NAMES:
            agent = build(name, ctx)
            assert built[name].agent.group_id == agent.group_id == f"counterpoint.{name}"
            assert {t.name for t in built[name].agent.consumes} == {
                t.name for t in agent.consumes}


@pytest.mark.parametrize(("argv", "expected"), [
    (["/v/bin/python", "/v/bin/counterpoint", "agent", "triage"], "triage"),
    (["/v/bin/counterpoint", "agent", "billing"], "billing"),
    (["python", "-m", "counterpoint.infra.cli", "agent", "synthesis"], "synthesis"),
    (["/v/bin/counterpoint", "agent", "nobody"], None),
    (["/v/bin/counterpoint", "up"], None),
    (["vim", "agent", "triage"], None),
    (["agent", "triage"], None),
    (["/v/bin/counterpoint", "agent"], None),
])
def test_agent_of_command_lines(argv: list[str], expected: str | None) -> None:
    assert agent_of(argv, AGENT_NAMES) == expected


def test_agent_of_knows_only_the_projects_names() -> None:
    argv = ["/v/bin/counterpoint", "agent", "writer", "--config", "/p/counterpoint.toml"]
    assert agent_of(argv, ("researcher", "writer")) == "writer"
    assert agent_of(argv, AGENT_NAMES) is None


def test_scan_processes_reads_cmdline_and_uptime(tmp_path: Path) -> None:
    (tmp_path / "uptime").write_text("1000.50 3000.00\n")
    _fake_proc(tmp_path, 41, ["/v/bin/python", "/v/bin/counterpoint", "agent", "synthesis"], 900)
    _fake_proc(tmp_path, 42, ["/v/bin/python", "/v/bin/counterpoint", "agent", "triage"], 990)
    _fake_proc(tmp_path, 7, ["/v/bin/python", "/v/bin/counterpoint", "agent", "triage"], 400)
    _fake_proc(tmp_path, 43, ["bash", "-c", "sleep 1"], 10)
    (tmp_path / "44").mkdir()  # a process that vanished: no cmdline
    (tmp_path / "self").mkdir()
    found = scan_processes(AGENT_NAMES, tmp_path)
    assert [(p.agent, p.pid) for p in found] == [("triage", 7), ("triage", 42),
                                                  ("synthesis", 41)]
    assert found[0].uptime_s == pytest.approx(600.5, abs=0.1)
    assert found[1].uptime_s == pytest.approx(10.5, abs=0.1)
    assert found[0].command == "/v/bin/python /v/bin/counterpoint agent triage"


def test_scan_processes_without_stat_has_unknown_uptime(tmp_path: Path) -> None:
    d = tmp_path / "5"
    d.mkdir()
    (d / "cmdline").write_bytes(b"counterpoint\0agent\0knowledge\0")
    (found,) = scan_processes(AGENT_NAMES, tmp_path)
    assert (found.agent, found.pid, found.uptime_s) == ("knowledge", 5, None)
    assert scan_processes(AGENT_NAMES, tmp_path / "missing") == []


def test_scan_processes_finds_this_machines_real_processes() -> None:
    assert all(p.agent in AGENT_NAMES for p in scan_processes(AGENT_NAMES))


LOG = """\
2025-01-01 10:00:00,000 INFO counterpoint.bus.kafka: triage pid 42 assigned 2 partitions: \
intake.alerts[0] intake.tickets[0]
2025-01-01 10:00:01,000 INFO counterpoint.bus.kafka: triage pid 42 consuming x as group y
2025-01-01 10:00:05,000 INFO counterpoint.bus.kafka: triage pid 42 assigned 4 partitions: \
intake.alerts[0] intake.alerts[1] intake.tickets[0] intake.tickets[1]
2025-01-01 10:00:05,000 INFO counterpoint.bus.kafka: triage pid 43 assigned 0 partitions: (none)
garbage line
"""


def test_parse_assignments_keeps_each_pids_last_line() -> None:
    parsed = parse_assignments(LOG.splitlines(keepends=True))
    assert parsed == {
        42: ("triage", [("intake.alerts", 0), ("intake.alerts", 1), ("intake.tickets", 0),
                        ("intake.tickets", 1)]),
        43: ("triage", []),
    }


def test_read_assignments_newest_file_wins(tmp_path: Path) -> None:
    old, new = tmp_path / "billing-1.log", tmp_path / "billing-2.log"
    old.write_text("billing pid 9 assigned 1 partitions: investigation.tasks.billing[3]\n")
    new.write_text("billing pid 9 assigned 1 partitions: investigation.tasks.billing[1]\n")
    os.utime(old, (1000, 1000))
    os.utime(new, (2000, 2000))
    (tmp_path / "notes.txt").write_text("billing pid 9 assigned 1 partitions: x[0]\n")
    assert read_assignments(tmp_path) == {9: ("billing", [("investigation.tasks.billing", 1)])}
    assert read_assignments(tmp_path / "missing") == {}


def _status(tmp_path: Path) -> Status:
    lags = {
        "triage": [PartitionLag("intake.tickets", 0, 5, 5, 0),
                   PartitionLag("intake.tickets", 1, None, 3, 3),
                   PartitionLag("intake.alerts", 0, 2, 2, 0)],
        "billing": [PartitionLag("investigation.tasks.billing", 0, 1, 4, 3)],
    }
    ours = StackId.of("127.0.0.1:9092", tmp_path)
    procs = [LocalProcess("triage", 42, 75.0, "counterpoint agent triage", ours),
             LocalProcess("triage", 43, None, "counterpoint agent triage", ours),
             LocalProcess("billing", 50, 4000.0, "counterpoint agent billing", ours)]
    assignments = {42: ("triage", [("intake.tickets", 0), ("intake.tickets", 1)]),
                   50: ("knowledge", [("investigation.tasks.knowledge", 0)])}  # stale pid reuse
    return assemble("127.0.0.1:9092", tmp_path, GROUPS, lags, procs, assignments, host="box1")


def test_assemble_and_json(tmp_path: Path) -> None:
    status = _status(tmp_path)
    assert [a.name for a in status.agents] == list(AGENT_NAMES)
    data = status_json(status)
    triage, billing = data["agents"][0], data["agents"][1]
    assert triage["group"] == "counterpoint.triage" and triage["lag"] == 3
    assert [p["pid"] for p in triage["processes"]] == [42, 43]
    assert triage["processes"][0]["partitions_from_logs"] == ["intake.tickets[0]",
                                                              "intake.tickets[1]"]
    assert triage["processes"][1]["partitions_from_logs"] is None
    assert triage["partitions"][1] == {"topic": "intake.tickets", "partition": 1,
                                       "committed": None, "end": 3, "lag": 3,
                                       "local_pid_from_logs": 42}
    assert triage["partitions"][2]["local_pid_from_logs"] is None
    # A log line from another agent under a reused pid is not attributed.
    assert billing["processes"][0]["partitions_from_logs"] is None
    assert billing["lag"] == 3
    assert data["agents"][2]["processes"] == [] and data["agents"][2]["lag"] == 0
    assert "this machine (box1)" in data["processes_scope"]


def test_render_status(tmp_path: Path) -> None:
    console = Console(record=True, width=220, color_system=None)
    console.print(render_status(_status(tmp_path)))
    text = console.export_text()
    for name in AGENT_NAMES:
        assert name in text
    assert "42 · 1m15s · tickets[0] tickets[1]" in text
    assert "43 · ?" in text
    assert "50 · 1h06m" in text
    assert "[1] -/3" in text
    assert "none here" in text
    assert "this machine (box1)" in text
    assert "no such topics" in text  # account has no lag rows in this synthetic status


def test_status_subcommand_parses() -> None:
    args = build_parser().parse_args(["status", "--json"])
    assert args.json and args.func.__name__ == "cmd_status"


def test_failed_webhook_deliveries_are_shown_only_when_there_are_some(tmp_path: Path) -> None:
    status = _status(tmp_path)
    console = Console(record=True, width=220, color_system=None)
    console.print(render_status(status))
    assert "webhook deliveries failed" not in console.export_text()
    status.webhook_failures = 2
    console = Console(record=True, width=220, color_system=None)
    console.print(render_status(status))
    assert "webhook deliveries failed: 2 request(s)" in console.export_text()
    assert status_json(status)["webhook_deliveries_failed"] == 2


# --- which stack a process belongs to -----------------------------------------------------------

EMBEDDED = {"COUNTERPOINT_BROKER_PORT": "9192"}


@pytest.mark.parametrize(("environ", "cwd", "expected"), [
    ({"KAFKA_BOOTSTRAP_SERVERS": "k2:9092, K1:9092", "COUNTERPOINT_HOME": "/srv/cp"}, "/",
     (("k1:9092", "k2:9092"), "/srv/cp")),
    ({}, "/work/a", (("127.0.0.1:9092",), "/work/a/.counterpoint")),  # all defaults
    ({**EMBEDDED, "COUNTERPOINT_HOME": "state"}, "/work/b", (("127.0.0.1:9192",), "/work/b/state")),
    ({"kafka_bootstrap_servers": "k:1"}, "/", (("k:1",), "/.counterpoint")),  # any case
    ({"KAFKA_BOOTSTRAP_SERVERS": ""}, "/", (("127.0.0.1:9092",), "/.counterpoint")),  # compose
])
def test_stack_of_is_what_the_process_settings_select(
        environ: dict[str, str], cwd: str, expected: tuple[tuple[str, ...], str]) -> None:
    stack = stack_of(environ, Path(cwd))
    assert stack is not None
    assert (stack.servers, str(stack.home)) == expected


def test_stack_of_settings_that_do_not_validate_is_unknown() -> None:
    assert stack_of({"COUNTERPOINT_BROKER_PORT": "not-a-port"}, Path("/")) is None


def test_from_environ_reads_what_pydantic_settings_reads(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "k:9", "counterpoint_home": str(tmp_path),
               "COUNTERPOINT_BROKER_PORT": "9300", "COUNTERPOINT_MAX_IN_FLIGHT": "7",
               "ANTHROPIC_BASE_URL": "http://127.0.0.1:1", "COUNTERPOINT_WEBHOOKS": '{"*": "x"}'}
    for name in Settings.env_names().values():
        monkeypatch.delenv(name, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert Settings.from_environ(environ, Settings.model_fields).model_dump() == (
        Settings().model_dump())


def _stacked_proc(tmp_path: Path) -> tuple[Path, Path]:
    """Agent processes of this stack, of two other stacks, and one unreadable."""
    root, home = tmp_path / "proc", tmp_path / "home"
    root.mkdir()
    (root / "uptime").write_text("100.0 100.0\n")
    argv = ["/v/bin/counterpoint", "agent"]
    ours = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9192", "COUNTERPOINT_HOME": str(home)}
    _fake_proc(root, 11, [*argv, "triage"], 1, ours)
    # The same stack spelled another way: embedded broker settings, home relative to its cwd.
    _fake_proc(root, 12, [*argv, "billing"], 1, {**EMBEDDED, "COUNTERPOINT_HOME": "home"},
               cwd=tmp_path)
    _fake_proc(root, 21, [*argv, "triage"], 1, {**ours, "KAFKA_BOOTSTRAP_SERVERS": "b:9092"})
    _fake_proc(root, 22, [*argv, "triage"], 1, {**ours, "COUNTERPOINT_HOME": str(tmp_path)})
    _fake_proc(root, 31, [*argv, "triage"], 1)
    return root, home


def test_only_this_stacks_processes_are_listed(tmp_path: Path) -> None:
    root, home = _stacked_proc(tmp_path)
    status = assemble("127.0.0.1:9192", home, GROUPS, {}, scan_processes(AGENT_NAMES, root), {},
                      host="box1")
    listed = {a.name: [p.pid for p in a.processes] for a in status.agents if a.processes}
    assert listed == {"triage": [11], "billing": [12]}
    assert (status.elsewhere, status.unreadable) == (2, 1)
    data = status_json(status)
    assert (data["processes_of_other_stacks"], data["processes_unreadable"]) == (2, 1)
    assert f"broker 127.0.0.1:9192, home {home}" in data["processes_scope"]
    console = Console(record=True, width=400, color_system=None)
    console.print(render_status(status))
    text = console.export_text()
    assert "2 agent process(es) on this machine belong to another stack" in text
    assert "1 agent process(es) on this machine have an environment this user cannot" in text


def test_without_proc_local_processes_are_unknown_not_absent(tmp_path: Path) -> None:
    status = assemble("127.0.0.1:9092", tmp_path, GROUPS, {}, None, {}, host="box1")
    assert not status.processes_known
    data = status_json(status)
    assert data["processes_known"] is False and data["processes_scope"].startswith("unknown")
    console = Console(record=True, width=220, color_system=None)
    console.print(render_status(status))
    text = console.export_text()
    assert "unknown (no /proc)" in text and "none here" not in text
