"""Nudges between processes on one host (bus/wake.py): real Unix sockets, no broker."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from counterpoint.bus.wake import Listener, Nudger, topic_dir

BROKER = "tansu_cluster@127.0.0.1:9092"


@pytest.fixture
def root() -> Iterator[Path]:
    """A short folder for the sockets. A Unix socket's path has at most 107 bytes, and a
    socket under tmp_path may not fit: pytest-xdist's tmp_path is longer (.../popen-gw0/...),
    and the test only passed because its name is cut to 30 characters there."""
    with tempfile.TemporaryDirectory(prefix="wake-") as name:
        yield Path(name)


async def test_a_nudge_for_a_topic_wakes_its_listeners_only(root: Path) -> None:
    tickets = Listener(BROKER, ["intake.tickets"], root=root)
    alerts = Listener(BROKER, ["intake.alerts"], root=root)
    tickets.open()
    alerts.open()
    nudger = Nudger(BROKER, root=root)
    try:
        nudger.nudge("intake.tickets")
        await asyncio.wait_for(tickets.event.wait(), 5)
        await asyncio.sleep(0.05)
        assert not alerts.event.is_set()
        assert nudger.sent == 1
    finally:
        for item in (tickets, alerts, nudger):
            item.close()


async def test_another_broker_is_another_address(root: Path) -> None:
    listener = Listener(BROKER, ["intake.tickets"], root=root)
    listener.open()
    other = Nudger("tansu_cluster@127.0.0.1:9093", root=root)
    try:
        other.nudge("intake.tickets")
        await asyncio.sleep(0.1)
        assert not listener.event.is_set() and other.sent == 0
    finally:
        listener.close()
        other.close()


async def test_sockets_of_dead_processes_are_pruned_and_own_ones_removed(
        root: Path) -> None:
    folder = topic_dir(BROKER, "intake.tickets", root)
    folder.mkdir(parents=True)
    stale = folder / "999999999.sock"  # no such process
    stale.touch()
    listener = Listener(BROKER, ["intake.tickets"], root=root)
    listener.open()
    mine = folder / f"{os.getpid()}.sock"
    assert not stale.exists() and mine.exists()
    listener.close()
    assert not mine.exists()


async def test_nudges_to_a_listener_that_is_gone_are_dropped_quietly(root: Path) -> None:
    listener = Listener(BROKER, ["intake.tickets"], root=root)
    listener.open()
    nudger = Nudger(BROKER, root=root)
    nudger.nudge("intake.tickets")  # lists the folder while the listener is there
    await asyncio.sleep(0.05)
    listener.close()
    nudger.nudge("intake.tickets")  # the cached listing still names it: no error
    await asyncio.sleep(0.05)
    nudger.close()


async def test_a_socket_that_cannot_be_bound_is_closed_and_said(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    deep = root / ("d" * 120)  # no socket path under it fits in 107 bytes
    listener = Listener(BROKER, ["intake.tickets"], root=deep)
    fds = len(os.listdir("/proc/self/fd"))
    with caplog.at_level(logging.WARNING, logger="counterpoint.bus.wake"):
        listener.open()
    # Before the fix the unbound socket stayed open until garbage collection (an fd per
    # topic, and a ResourceWarning wherever the collector happened to run).
    assert len(os.listdir("/proc/self/fd")) == fds
    assert "no wake-up socket" in caplog.text and "idle poll only" in caplog.text
    listener.close()
