"""The fork server: real forked children, checked by pid in /proc.

Its children run tests/support/forkee.py's `main` in place of the CLI's (ENTRY_ENV), so each
case is quick and says what happened; `counterpoint up` and the integration stacks run real
agents through the same server (tests/integration/test_orphans.py, test_status.py).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoint.infra import forkserver
from counterpoint.infra.forkserver import ENTRY_ENV, ForkServer
from counterpoint.infra.lifeline import supervised_env
from counterpoint.infra.processes import Supervisor
from tests.support.procs import alive, cmdline, environ, parent_of, wait_gone

pytestmark = pytest.mark.skipif(not forkserver.supported(), reason="forks on Linux only")

TITLE = ["/opt/somewhere/bin/counterpoint", "agent", "knowledge", "--config", "/p/c.toml"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    env = supervised_env({**os.environ, ENTRY_ENV: "tests.support.forkee",
                          "FORKEE_MARK": str(tmp_path)})
    started = ForkServer(env, tmp_path / "forkserver.log", room=256)
    try:
        yield started
    finally:
        started.close()


def _log(path: Path, text: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {content!r}")


def test_a_child_looks_and_lives_like_an_exec_d_agent(server: ForkServer, tmp_path: Path) -> None:
    log = tmp_path / "knowledge-1.log"
    child = server.spawn(["wait"], TITLE, log)
    assert "forkee wait" in _log(log, "forkee wait")  # its output goes to its own log
    assert cmdline(child.pid) == TITLE  # what ps and `counterpoint status` read
    assert environ(child.pid)["FORKEE_MARK"] == str(tmp_path)  # the env the server was given
    assert os.getsid(child.pid) == child.pid  # a session of its own: Ctrl-C is not for it
    assert parent_of(child.pid) == server.popen.pid
    assert child.poll() is None
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 7  # its own SIGTERM handler ran and chose the code


def test_exit_codes_come_back_as_popen_gives_them(server: ForkServer, tmp_path: Path) -> None:
    done = server.spawn(["exit", "3"], TITLE, tmp_path / "a.log")
    failed = server.spawn(["raise"], TITLE, tmp_path / "b.log")
    killed = server.spawn(["wait"], TITLE, tmp_path / "c.log")
    quit_ = server.spawn(["quit"], TITLE, tmp_path / "d.log")
    _log(tmp_path / "c.log", "forkee wait")
    killed.kill()
    assert done.wait(timeout=30) == 3
    assert quit_.wait(timeout=30) == 0
    assert failed.wait(timeout=30) == 1
    assert "RuntimeError: forkee failed on purpose" in _log(tmp_path / "b.log", "Traceback")
    assert killed.wait(timeout=30) == -signal.SIGKILL
    killed.kill()  # a child that has ended is never signalled (its pid may be another's)


def test_wait_times_out_like_popen(server: ForkServer, tmp_path: Path) -> None:
    import subprocess

    child = server.spawn(["wait"], TITLE, tmp_path / "a.log")
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(timeout=0.2)
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL


def test_children_stop_when_the_server_dies(server: ForkServer, tmp_path: Path) -> None:
    children = [server.spawn(["wait"], TITLE, tmp_path / f"{i}.log") for i in range(2)]
    for i in range(2):
        _log(tmp_path / f"{i}.log", "forkee wait")
    server.popen.kill()
    assert not wait_gone([c.pid for c in children], 30)  # the kernel's SIGTERM (lifeline)
    # With the server gone, a child that no longer exists counts as ended.
    assert all(c.wait(timeout=30) == 1 for c in children)


def test_closing_the_server_ends_it(tmp_path: Path) -> None:
    started = ForkServer(supervised_env(dict(os.environ)), tmp_path / "forkserver.log", room=64)
    started.spawn(["agent", "--help"], ["counterpoint", "agent", "--help"], tmp_path / "h.log")
    started.close()
    assert started.popen.returncode == 0 and not alive(started.popen.pid)
    assert "usage: counterpoint agent" in _log(tmp_path / "h.log", "usage:")


def test_a_long_title_is_cut_to_the_room(server: ForkServer, tmp_path: Path) -> None:
    child = server.spawn(["wait"], ["counterpoint", "agent", "x" * 1000], tmp_path / "a.log")
    _log(tmp_path / "a.log", "forkee wait")
    shown = cmdline(child.pid)
    room = len("\0".join(cmdline(server.popen.pid)))  # the server's own command line
    assert shown[:2] == ["counterpoint", "agent"] and len(shown[2]) < 1000
    assert len("\0".join(shown)) <= room
    child.kill()


def test_the_supervisor_forks_agents_and_execs_what_tests_start(tmp_path: Path) -> None:
    forked = Supervisor(tmp_path / "logs", restart=False,
                        env={**os.environ, ENTRY_ENV: "tests.support.forkee"},
                        command=lambda name: ["counterpoint", "agent", name], fork=True)
    other = Supervisor(tmp_path / "other", restart=False,
                       command=lambda name: [sys.executable, "-c", "print('hi')"])
    assert Supervisor(tmp_path / "x").fork and not other.fork
    try:
        forked.start({"wait": 1})
        other.start({"hi": 1})
        proc = forked.processes[0]
        _log(proc.log_path, "forkee agent wait")  # the CLI's arguments
        assert parent_of(proc.popen.pid) == forked.fork_server_pid
        assert cmdline(proc.popen.pid) == ["counterpoint", "agent", "wait"]
        assert parent_of(other.processes[0].popen.pid) == os.getpid()
    finally:
        report = forked.stop(timeout_s=10)
        other.stop(timeout_s=10)
    assert report.stopped == ["wait#1"]
    assert forked.fork_server_pid is None
