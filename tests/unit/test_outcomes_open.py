"""Every agent process opens the memory database at start-up, all at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from counterpoint.agents.outcomes import OutcomeStore


def _open(path: str, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    OutcomeStore.open(path).close()


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
