"""Process checks by pid for lifecycle tests (Linux /proc): alive, descendants, clean-up.

A killed child re-parented to an init that does not reap it stays a zombie; a zombie runs
nothing and holds no port, so it counts as gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def alive(pid: int) -> bool:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def parent_of(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def descendants(root: int) -> set[int]:
    """Every live process below `root`, by parent pid, as of now."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                parents[int(entry.name)] = ppid
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return {pid for pid in found if alive(pid)}


def wait_gone(pids: Iterable[int], timeout_s: float) -> set[int]:
    """Poll until none of `pids` is alive or the time is up; the survivors."""
    pending = set(pids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = {pid for pid in pending if alive(pid)}
        if pending:
            time.sleep(0.2)
    return {pid for pid in pending if alive(pid)}


def kill_survivors(pids: Iterable[int], marker: str) -> None:
    """SIGKILL those of `pids` still running whose command line or environment mentions
    `marker` (a pid reused meanwhile by something else is left alone)."""
    for pid in pids:
        if not alive(pid):
            continue
        if any(marker in text for text in [*cmdline(pid), *environ(pid).values()]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def environ(pid: int) -> dict[str, str]:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def reap(popen: subprocess.Popen[Any]) -> None:
    """Kill `popen` if it still runs, wait for it, and close its pipes."""
    if popen.poll() is None:
        popen.kill()
        popen.wait(timeout=30)
    for pipe in (popen.stdin, popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()
