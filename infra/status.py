"""`counterpoint status`: every agent's consumer group, its partitions and lag, and the local
OS processes running it.

Lag is read from the broker without joining any group (an OffsetFetch and a group-less
reader), so asking never triggers a rebalance. Which agents there are, their groups and the
topics they consume come from the project (infra/project.py), built as `up` builds it.
Processes are the ones on this machine whose command line is `counterpoint agent NAME`, with
NAME one of the project's agents, and whose environment (read from /proc, with its working
folder) selects the same broker and the same COUNTERPOINT_HOME as this command: another
stack's agents on this machine are counted apart, not listed, and so are processes whose
environment cannot be read (another user's). Agents on other machines are not seen; without
/proc, no process is listed and status says so. Which process holds which partitions comes from
the agents' own log lines ("NAME pid N assigned K partitions: ..."), so it is best effort: it is
as fresh as the last rebalance logged.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from counterpoint.bus.admin import PartitionLag, group_lag
from counterpoint.bus.kafka import KafkaConfig
from counterpoint.infra.assembly import BuiltAgent
from counterpoint.infra.settings import Settings
from counterpoint.infra.webhook_status import failed_deliveries

# --- local processes (/proc) ------------------------------------------------------------------


@dataclass(frozen=True)
class StackId:
    """Which broker and home a process works with: one stack on a machine."""

    servers: tuple[str, ...]
    home: Path

    @classmethod
    def of(cls, bootstrap_servers: str, home: Path) -> StackId:
        servers = {s.strip().lower() for s in bootstrap_servers.split(",") if s.strip()}
        return cls(tuple(sorted(servers)), home.resolve())


_STACK_FIELDS = ("kafka_bootstrap_servers", "broker_host", "broker_port", "home")


def stack_of(environ: Mapping[str, str], cwd: Path) -> StackId | None:
    """The stack a process with this environment and working folder belongs to, as its
    settings select them; None when they are not valid settings."""
    try:
        settings = Settings.from_environ(environ, _STACK_FIELDS)
    except ValidationError:
        return None
    return StackId.of(settings.bootstrap_servers, cwd / settings.home)


@dataclass(frozen=True)
class LocalProcess:
    agent: str
    pid: int
    uptime_s: float | None
    command: str
    stack: StackId | None = None  # None: its environment could not be read


def agent_of(argv: Sequence[str], names: Sequence[str]) -> str | None:
    """The agent NAME when argv is `counterpoint agent NAME` (script or `-m ...infra.cli`)
    and NAME is one of `names`."""
    for i, arg in enumerate(argv):
        if arg != "agent" or i + 1 >= len(argv) or i == 0:
            continue
        launcher = argv[:i]
        if any(Path(a).name == "counterpoint" or a == "counterpoint.infra.cli" for a in launcher):
            name = argv[i + 1]
            return name if name in names else None
    return None


def _clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


def _uptime_s(proc: Path, pid_dir: Path, ticks: int) -> float | None:
    """Seconds since the process started: /proc/uptime minus starttime (stat field 22)."""
    try:
        system_up = float((proc / "uptime").read_text().split()[0])
        stat = (pid_dir / "stat").read_text()
        started_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, system_up - started_ticks / ticks)


def _stack_of_pid(pid_dir: Path) -> StackId | None:
    try:
        raw = (pid_dir / "environ").read_bytes()
        cwd = Path(os.readlink(pid_dir / "cwd"))
    except OSError:  # another user's process, or gone meanwhile
        return None
    pairs = (item.decode("utf-8", "replace").partition("=") for item in raw.split(b"\0") if item)
    return stack_of({key: value for key, _, value in pairs}, cwd)


def scan_processes(names: Sequence[str], proc: Path = Path("/proc")) -> list[LocalProcess]:
    """Processes on this machine running `counterpoint agent NAME` for one of `names`, by
    agent then pid, each with the stack its environment selects."""
    ticks = _clock_ticks()
    found = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []
    for pid_dir in entries:
        if not pid_dir.name.isdigit():
            continue
        try:
            raw = (pid_dir / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        name = agent_of(argv, names)
        if name is None:
            continue
        found.append(LocalProcess(name, int(pid_dir.name), _uptime_s(proc, pid_dir, ticks),
                                  " ".join(argv), _stack_of_pid(pid_dir)))
    return sorted(found, key=lambda p: (list(names).index(p.agent), p.pid))


# --- partition assignments from the agents' logs ------------------------------------------------

_ASSIGNED = re.compile(r"\b(?P<agent>[\w.-]+) pid (?P<pid>\d+) assigned (?P<count>\d+) "
                       r"partitions: (?P<parts>.*)$")
_PART = re.compile(r"^(?P<topic>.+)\[(?P<partition>\d+)\]$")


def parse_assignments(lines: Iterable[str]) -> dict[int, tuple[str, list[tuple[str, int]]]]:
    """pid -> (agent, partitions) from the last assignment each pid logged."""
    out: dict[int, tuple[str, list[tuple[str, int]]]] = {}
    for line in lines:
        m = _ASSIGNED.search(line.rstrip("\r\n"))
        if m is None:
            continue
        parts = []
        for token in m["parts"].split():
            pm = _PART.match(token)
            if pm is not None:
                parts.append((pm["topic"], int(pm["partition"])))
        out[int(m["pid"])] = (m["agent"], parts)
    return out


def read_assignments(logs_dir: Path) -> dict[int, tuple[str, list[tuple[str, int]]]]:
    """Every agent log under logs_dir, oldest first, so a reused pid keeps its newest line."""
    try:
        files = sorted(logs_dir.glob("*.log"), key=lambda f: f.stat().st_mtime)
    except OSError:
        return {}
    out: dict[int, tuple[str, list[tuple[str, int]]]] = {}
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                out.update(parse_assignments(f))
        except OSError:
            continue
    return out


# --- the whole picture ---------------------------------------------------------------------------


@dataclass
class AgentStatus:
    name: str
    group: str
    partitions: list[PartitionLag]
    processes: list[LocalProcess] = field(default_factory=list)
    # pid -> partitions it logged as assigned; only for the local processes listed above.
    held: dict[int, list[tuple[str, int]]] = field(default_factory=dict)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def holder(self, topic: str, partition: int) -> int | None:
        for pid, parts in self.held.items():
            if (topic, partition) in parts:
                return pid
        return None


@dataclass
class Status:
    bootstrap_servers: str
    host: str
    home: Path
    agents: list[AgentStatus]
    taken_at: float = field(default_factory=time.time)
    # Requests whose result webhook failed (infra/webhook_status.py); None = not looked up.
    webhook_failures: int | None = None
    # False where there is no /proc: local processes are unknown, not absent.
    processes_known: bool = True
    elsewhere: int = 0  # agent processes here of another stack (broker or home)
    unreadable: int = 0  # agent processes here whose environment could not be read

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


def assemble(bootstrap_servers: str, home: Path, groups: Mapping[str, str],
             lags: Mapping[str, list[PartitionLag]], processes: Sequence[LocalProcess] | None,
             assignments: Mapping[int, tuple[str, list[tuple[str, int]]]],
             host: str | None = None) -> Status:
    """One row per agent of `groups` (name -> consumer group), in that order. processes:
    every local agent process (None: no way to know); only this stack's (this broker, this
    home) are listed."""
    stack = StackId.of(bootstrap_servers, home)
    ours = [p for p in processes or [] if p.stack == stack]
    agents = []
    for name, group in groups.items():
        mine = [p for p in ours if p.agent == name]
        held = {p.pid: assignments[p.pid][1] for p in mine
                if p.pid in assignments and assignments[p.pid][0] == name}
        agents.append(AgentStatus(name, group, list(lags.get(name, [])), mine, held))
    others = [p for p in processes or [] if p.stack != stack]
    return Status(bootstrap_servers, host or socket.gethostname(), stack.home, agents,
                  processes_known=processes is not None,
                  elsewhere=sum(p.stack is not None for p in others),
                  unreadable=sum(p.stack is None for p in others))


async def collect_status(bootstrap_servers: str, home: Path, agents: Sequence[BuiltAgent],
                         proc: Path = Path("/proc")) -> Status:
    lags = await asyncio.gather(*(
        group_lag(bootstrap_servers, b.agent.group_id, [t.name for t in b.agent.consumes])
        for b in agents))
    names = [b.name for b in agents]
    status = assemble(bootstrap_servers, home, {b.name: b.agent.group_id for b in agents},
                      dict(zip(names, lags, strict=True)),
                      scan_processes(names, proc) if proc.is_dir() else None,
                      read_assignments(home / "logs"))
    status.webhook_failures = len(await failed_deliveries(KafkaConfig(bootstrap_servers)))
    return status


def _scope(status: Status) -> str:
    if not status.processes_known:
        return f"unknown: no /proc on this machine ({status.host}), so no process is listed"
    return (f"local: OS processes on this machine ({status.host}) only, of this stack: broker "
            f"{status.bootstrap_servers}, home {status.home}")


def _not_listed(status: Status) -> list[str]:
    lines = []
    if status.elsewhere:
        lines.append(f"{status.elsewhere} agent process(es) on this machine belong to another "
                     "stack (another broker or home) and are not listed")
    if status.unreadable:
        lines.append(f"{status.unreadable} agent process(es) on this machine have an "
                     "environment this user cannot read (another user's?) and are not listed")
    return lines


def status_json(status: Status) -> dict[str, Any]:
    return {
        "bootstrap_servers": status.bootstrap_servers,
        "taken_at": status.taken_at,
        "processes_scope": _scope(status),
        "processes_known": status.processes_known,
        "processes_of_other_stacks": status.elsewhere,
        "processes_unreadable": status.unreadable,
        "host": status.host,
        "home": str(status.home),
        "assignments_source": f"agent logs in {status.logs_dir} (best effort)",
        "webhook_deliveries_failed": status.webhook_failures,
        "agents": [{
            "name": a.name,
            "group": a.group,
            "lag": a.lag,
            "partitions": [{
                "topic": p.topic, "partition": p.partition, "committed": p.committed,
                "end": p.end, "lag": p.lag, "local_pid_from_logs": a.holder(p.topic, p.partition),
            } for p in a.partitions],
            "processes": [{
                "pid": p.pid,
                "uptime_s": None if p.uptime_s is None else round(p.uptime_s, 1),
                "command": p.command,
                "partitions_from_logs": ([f"{t}[{n}]" for t, n in a.held[p.pid]]
                                         if p.pid in a.held else None),
            } for p in a.processes],
        } for a in status.agents],
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _lag_text(lag: int) -> Text:
    return Text(str(lag), style="bold yellow" if lag else "green")


def render_status(status: Status) -> RenderableType:
    table = Table(title=f"Counterpoint agents on {status.bootstrap_servers}", expand=False)
    table.add_column("agent", style="bold")
    table.add_column("group")
    table.add_column(f"local processes on {status.host}\n(pid · uptime · partitions from logs)")
    table.add_column("partitions: [p] committed/end")
    table.add_column("lag", justify="right")
    for a in status.agents:
        if a.processes:
            procs = Text()
            for i, p in enumerate(a.processes):
                if i:
                    procs.append("\n")
                procs.append(f"{p.pid}", style="cyan")
                procs.append(f" · {_duration(p.uptime_s)}")
                if p.pid in a.held:
                    held = " ".join(f"{t.rsplit('.', 1)[-1]}[{n}]" for t, n in a.held[p.pid])
                    procs.append(f" · {held or '(none)'}", style="dim")
        elif status.processes_known:
            procs = Text("none here", style="red")
        else:
            procs = Text("unknown (no /proc)", style="yellow")
        parts = Text()
        by_topic: dict[str, list[PartitionLag]] = {}
        for pl in a.partitions:
            by_topic.setdefault(pl.topic, []).append(pl)
        for i, (topic, ps) in enumerate(by_topic.items()):
            if i:
                parts.append("\n")
            parts.append(f"{topic} ")
            for j, pl in enumerate(ps):
                if j:
                    parts.append(" ")
                committed = "-" if pl.committed is None else str(pl.committed)
                parts.append(f"[{pl.partition}] {committed}/{pl.end}",
                             style="yellow" if pl.lag else "")
        if not a.partitions:
            parts = Text("no such topics on the broker", style="red")
        table.add_row(a.name, a.group, procs, parts, _lag_text(a.lag))
    note = Text(
        f"Processes are those on this machine ({status.host}) running `counterpoint agent "
        f"NAME` with this broker and home ({status.home}); agents on other machines are not "
        "shown. " + "".join(f"{line}. " for line in _not_listed(status))
        + "Partitions per process come from the "
        f"agents' logs in {status.logs_dir} (best effort, as of the last rebalance). "
        "Committed '-' means the group never committed there; its lag counts from the start. "
        "Synthesis keeps a request's inputs uncommitted until its result is out, and the "
        "approvals desk keeps each approval until a person decides or it expires: their lag "
        "includes that waiting work.",
        style="dim")
    if status.webhook_failures:
        failed = Text(f"webhook deliveries failed: {status.webhook_failures} request(s) — "
                      "`counterpoint deadletter list --reason webhook-failed` (or "
                      "webhook-rejected) shows why; `deadletter redrive` sends them again",
                      style="bold red")
        return Group(table, failed, note)
    return Group(table, note)
