"""`up` restarts a process that keeps failing at start-up later each time, not twice a second.

Real child processes (a Python that exits with code 3 at once, or sleeps); the supervisor's
clock is a stand-in, so the test never waits on a delay and never checks a time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from counterpoint.infra.processes import (
    RESTART_BASE_DELAY_S,
    RESTART_MAX_DELAY_S,
    STABLE_S,
    Supervisor,
    restart_delay,
)

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _supervisor(tmp_path: Path, clock: Clock, code: str) -> Supervisor:
    return Supervisor(tmp_path / "logs", command=lambda _name: [sys.executable, "-c", code],
                      clock=clock)


def test_the_delay_doubles_with_each_quick_death_up_to_the_cap() -> None:
    assert restart_delay(0) == 0
    assert [restart_delay(n) for n in (1, 2, 3)] == [RESTART_BASE_DELAY_S,
                                                     2 * RESTART_BASE_DELAY_S,
                                                     4 * RESTART_BASE_DELAY_S]
    assert restart_delay(50) == RESTART_MAX_DELAY_S


def test_a_process_that_keeps_exiting_at_start_is_restarted_later_each_time(
        tmp_path: Path) -> None:
    clock = Clock()
    supervisor = _supervisor(tmp_path, clock, "import sys; sys.exit(3)")
    supervisor.start({"crashy": 1})
    try:
        for n in (1, 2, 3, 4):
            (proc,) = supervisor.processes
            assert proc.popen.wait(timeout=30) == 3
            assert proc.restarts == n - 1
            clock.now += 0.1  # noticed soon after it started: a quick death
            supervisor.restart_due()
            delay = restart_delay(n)
            assert supervisor.processes == [proc], f"restarted at once after death {n}"
            clock.now += delay - 0.01
            supervisor.restart_due()
            assert supervisor.processes == [proc], f"restarted before its {delay} s wait"
            clock.now += 0.02
            supervisor.restart_due()
            (fresh,) = supervisor.processes
            assert fresh is not proc and fresh.restarts == n and fresh.quick_deaths == n
    finally:
        supervisor.stop()


def test_a_process_that_ran_a_while_is_restarted_at_once_and_the_backoff_resets(
        tmp_path: Path) -> None:
    clock = Clock()
    supervisor = _supervisor(tmp_path, clock, "import sys; sys.exit(3)")
    supervisor.start({"steady": 1})
    try:
        (proc,) = supervisor.processes
        proc.quick_deaths = 5  # it had been failing before this run
        assert proc.popen.wait(timeout=30) == 3
        clock.now += STABLE_S + 1  # but this run lasted
        supervisor.restart_due()
        (fresh,) = supervisor.processes
        assert fresh is not proc and fresh.quick_deaths == 0
    finally:
        supervisor.stop()


def test_nothing_is_restarted_while_stopping(tmp_path: Path) -> None:
    clock = Clock()
    supervisor = _supervisor(tmp_path, clock, "import time; time.sleep(30)")
    supervisor.start({"sleepy": 1})
    (proc,) = supervisor.processes
    supervisor.stop()
    clock.now += STABLE_S + 1
    supervisor.restart_due()
    assert supervisor.processes == [proc] and not proc.alive
