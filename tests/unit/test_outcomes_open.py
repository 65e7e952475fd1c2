"""Processes opening one fresh memory database at once (the memory and synthesis agents' first
requests after `counterpoint up`); and only those that use it open it."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from counterpoint.agents.outcomes import OutcomeStore


def _open(path: str, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    OutcomeStore.open(path, scrub=str).close()


def test_many_processes_open_a_fresh_database_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        path = str(tmp_path / f"memory-{round_}.db")
        start = ctx.Event()
        procs = [ctx.Process(target=_open, args=(path, start)) for _ in range(16)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * len(procs)


def test_the_store_opens_its_file_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "home" / "memory.db"
    store = OutcomeStore.lazy(path, scrub=str)
    assert not path.exists() and not store.opened
    assert store.recall(customer_id="C-1", service=None, exclude="r") == []
    assert path.exists() and store.opened
    store.close()
    assert not store.opened
