"""Children die with their supervisor, and stopping them is bounded and reported.

Real processes throughout: a supervisor process starts children through the real Supervisor
(and `guarded` for a foreign binary), the test SIGKILLs the supervisor and checks by pid that
no child survives. The watchdog-only cases are what runs where Linux's prctl does not (macOS).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from counterpoint.infra.processes import Supervisor
from tests.support.procs import cmdline, descendants, kill_survivors, reap, wait_gone

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks processes in /proc")

# A child: optionally ignores SIGTERM, follows its supervisor, says it is ready, then waits.
CHILD = """\
import signal, sys, time
from counterpoint.infra.lifeline import follow_supervisor
mode, marker = sys.argv[1], sys.argv[2]
if "stubborn" in mode:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
follow_supervisor(grace_s=2.0, kernel="kernel" in mode)
print("ready", flush=True)
time.sleep(600)
"""

# A supervisor: starts one child per mode (and guarded `sleep`s), prints their pids, waits.
SUPERVISOR = """\
import json, os, subprocess, sys, time
from pathlib import Path
from counterpoint.infra.lifeline import guarded
from counterpoint.infra.processes import Supervisor
logs, marker, child, *modes = sys.argv[1:]
supervisor = Supervisor(Path(logs), restart=False,
                        command=lambda mode: [sys.executable, "-c", child, mode, marker])
supervisor.start(dict.fromkeys(modes, 1))
sleepers = [subprocess.Popen(guarded(["sleep", marker]), start_new_session=True),
            subprocess.Popen([sys.executable, "-m", "counterpoint.infra.lifeline", "--watch",
                              str(os.getpid()), "--", "sleep", marker],
                             start_new_session=True)]
print(json.dumps([p.popen.pid for p in supervisor.processes] + [s.pid for s in sleepers]),
      flush=True)
time.sleep(600)
"""

MODES = ["kernel-polite", "kernel-stubborn", "watch-polite", "watch-stubborn"]


def _wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s:.0f}s")


def test_every_child_dies_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    marker = f"{600 + uuid.uuid4().int % 10_000_000 / 1e7:.7f}"  # a unique `sleep` argument
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path), marker, CHILD, *MODES],
        stdout=subprocess.PIPE, text=True)
    started: set[int] = set()
    try:
        assert supervisor.stdout is not None
        direct = json.loads(supervisor.stdout.readline())
        logs = [tmp_path / f"{mode}-1.log" for mode in MODES]
        _wait_for(lambda: all("ready" in log.read_text() for log in logs), 60,
                  "children not ready")
        # The exec'd guard is `sleep` itself; the watching guard is the parent of its `sleep`.
        _wait_for(lambda: len([p for p in descendants(supervisor.pid)
                               if cmdline(p)[:1] == ["sleep"]]) == 2, 30, "sleepers not up")
        started = descendants(supervisor.pid)
        assert set(direct) <= started, (direct, started)

        supervisor.kill()
        supervisor.wait(timeout=30)

        survivors = wait_gone(started, timeout_s=45)
        assert not survivors, {pid: cmdline(pid) for pid in survivors}
        texts = {mode: (tmp_path / f"{mode}-1.log").read_text() for mode in MODES}
        for mode in ("watch-polite", "watch-stubborn", "kernel-stubborn"):
            assert "supervisor pid" in texts[mode] and "is gone" in texts[mode], texts[mode]
        for mode in ("watch-stubborn", "kernel-stubborn"):
            assert "exiting now" in texts[mode], texts[mode]  # SIGTERM ignored: ended anyway
    finally:
        reap(supervisor)
        kill_survivors(started, marker)


def _command(mode: str) -> list[str]:
    return [sys.executable, "-c", CHILD, mode, "stop-report"]


def test_stop_is_bounded_and_says_what_stopped_and_what_was_killed(tmp_path: Path) -> None:
    supervisor = Supervisor(tmp_path, restart=False, command=_command)
    supervisor.start({"polite": 2, "stubborn": 1, "brief": 1})
    try:
        brief = next(p for p in supervisor.processes if p.name == "brief")
        brief.popen.kill()  # one that is gone before the stop
        logs = [p.log_path for p in supervisor.processes if p.name != "brief"]
        _wait_for(lambda: all("ready" in log.read_text() for log in logs), 60,
                  "children not ready")
        brief.popen.wait(timeout=30)

        report = supervisor.stop(timeout_s=3.0)

        assert report.stopped == ["polite#1", "polite#2"]
        assert report.killed == ["stubborn#1"]
        assert report.gone == ["brief#1"]
        assert 3.0 <= report.seconds < 3.0 + 30  # the grace, then the kill (slack for load)
        assert "2 agent process(es) stopped on SIGTERM, 1 had already exited" in report.summary()
        assert "killed after the grace: stubborn#1" in report.summary()
        assert not any(p.alive for p in supervisor.processes)
    finally:
        for proc in supervisor.processes:
            if proc.alive:
                proc.popen.kill()


def test_a_child_whose_supervisor_is_already_gone_stops_at_once(tmp_path: Path) -> None:
    """The supervisor it names died before the child looked: its parent is someone else."""
    env = {**os.environ, "COUNTERPOINT_SUPERVISOR_PID": str(os.getppid())}  # not its parent
    with open(tmp_path / "child.log", "wb") as log:
        child = subprocess.Popen([sys.executable, "-c", CHILD, "watch-polite", "late"], env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        assert child.wait(timeout=60) == -signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    assert "is gone; stopping" in (tmp_path / "child.log").read_text()


def test_guard_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "counterpoint.infra.lifeline", "x"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "usage:" in done.stderr
