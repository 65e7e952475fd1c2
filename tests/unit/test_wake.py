"""Nudges between processes on one host (bus/wake.py): real Unix sockets, no broker."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from counterpoint.bus.wake import Listener, Nudger, topic_dir

BROKER = "tansu_cluster@127.0.0.1:9092"


async def test_a_nudge_for_a_topic_wakes_its_listeners_only(tmp_path: Path) -> None:
    tickets = Listener(BROKER, ["intake.tickets"], root=tmp_path)
    alerts = Listener(BROKER, ["intake.alerts"], root=tmp_path)
    tickets.open()
    alerts.open()
    nudger = Nudger(BROKER, root=tmp_path)
    try:
        nudger.nudge("intake.tickets")
        await asyncio.wait_for(tickets.event.wait(), 5)
        await asyncio.sleep(0.05)
        assert not alerts.event.is_set()
        assert nudger.sent == 1
    finally:
        for item in (tickets, alerts, nudger):
            item.close()


async def test_another_broker_is_another_address(tmp_path: Path) -> None:
    listener = Listener(BROKER, ["intake.tickets"], root=tmp_path)
    listener.open()
    other = Nudger("tansu_cluster@127.0.0.1:9093", root=tmp_path)
    try:
        other.nudge("intake.tickets")
        await asyncio.sleep(0.1)
        assert not listener.event.is_set() and other.sent == 0
    finally:
        listener.close()
        other.close()


async def test_sockets_of_dead_processes_are_pruned_and_own_ones_removed(
        tmp_path: Path) -> None:
    folder = topic_dir(BROKER, "intake.tickets", tmp_path)
    folder.mkdir(parents=True)
    stale = folder / "999999999.sock"  # no such process
    stale.touch()
    listener = Listener(BROKER, ["intake.tickets"], root=tmp_path)
    listener.open()
    mine = folder / f"{os.getpid()}.sock"
    assert not stale.exists() and mine.exists()
    listener.close()
    assert not mine.exists()


async def test_nudges_to_a_listener_that_is_gone_are_dropped_quietly(tmp_path: Path) -> None:
    listener = Listener(BROKER, ["intake.tickets"], root=tmp_path)
    listener.open()
    nudger = Nudger(BROKER, root=tmp_path)
    nudger.nudge("intake.tickets")  # lists the folder while the listener is there
    await asyncio.sleep(0.05)
    listener.close()
    nudger.nudge("intake.tickets")  # the cached listing still names it: no error
    await asyncio.sleep(0.05)
    nudger.close()
