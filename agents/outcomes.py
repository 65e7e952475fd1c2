"""Memory of past outcomes: what earlier requests of a customer or a service came to.

The `memory` agent records every result from `synthesis.results` here; synthesis reads the
latest few for the same customer (tickets) or service (alerts) and offers them to the model as
context. It is a SQLite file, `$COUNTERPOINT_HOME/memory.db`, shared by the processes of one
host (WAL mode, so readers never wait for the writer). On several hosts each would remember
only what its own memory agent recorded; a shared database would replace this module.

Recording is idempotent (one row per request id), so a redelivered result changes nothing.
The file carries memory's mark (agents/sqlite_files.py): a file at the path that Counterpoint
did not create is never changed, and the agents that use memory (memory, synthesis) refuse to
start, naming it. A memory.db an earlier Counterpoint made (unmarked, holding only the outcome
table) is recognised and marked.
What is stored outlives every span and log, so it passes the same redaction first (`scrub`,
infra/redaction.py's `redact` in every agent process): the ids, titles and summaries kept
carry no card numbers, email addresses or credentials. The file is its owner's alone (0600,
agents/private_files.py; SQLite gives its -wal and -shm files the same mode).
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from counterpoint.agents import sqlite_files
from counterpoint.schemas.events import Finding, PastOutcome, Result

Scrub = Callable[[str], str]  # text -> the same text without secrets or personal data

SUMMARY_CHARS: Final = 240
RECALLED: Final = 3  # how many past outcomes are offered as context

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    request_id   TEXT PRIMARY KEY,
    source_id    TEXT NOT NULL,
    kind         TEXT NOT NULL,
    title        TEXT NOT NULL,
    summary      TEXT NOT NULL,
    status       TEXT NOT NULL,
    completed_at TEXT NOT NULL,
    customer_id  TEXT,
    service      TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_customer ON outcomes (customer_id, completed_at);
CREATE INDEX IF NOT EXISTS outcomes_service ON outcomes (service, completed_at);
"""
# "CPMO" in SQLite's application_id header field: a memory file Counterpoint created.
APPLICATION_ID: Final = sqlite_files.mark(b"CPMO")
_CREATE: Final = _SCHEMA + f"PRAGMA application_id = {APPLICATION_ID};\n"
REMEDY: Final = ("Move it elsewhere, or point COUNTERPOINT_MEMORY_DB at another file, and start "
                 "again: memory is then created fresh.")
_COLUMNS: Final = ("request_id", "source_id", "kind", "title", "summary", "status",
                   "completed_at", "customer_id", "service")


def default_memory_path(home: Path) -> Path:
    return home / "memory.db"


def summarize(result: Result) -> str:
    """One line: what the findings said, else the start of the text."""
    said = [f"{f.skill}: {f.summary}" for f in result.findings if f.skill != "knowledge"]
    line = "; ".join(said) or " ".join(result.text.split())
    return line if len(line) <= SUMMARY_CHARS else line[:SUMMARY_CHARS - 1] + "…"


def _retry_locked(step: Callable[[], object], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(random.uniform(0.01, 0.1))


def _earlier_memory(path: Path) -> bool:
    """An unmarked file that an earlier Counterpoint made: empty (made, then interrupted), or
    nothing but the outcome table with its columns."""
    if path.stat().st_size == 0:
        return True
    with contextlib.closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro",
                                            uri=True)) as db:
        tables = [r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()]
        if tables != ["outcomes"]:
            return False
        columns = tuple(r[1] for r in db.execute("PRAGMA table_info(outcomes)").fetchall())
    return columns == _COLUMNS


def check(path: Path) -> None:
    """UnrecognisedFile when a file at `path` is not a memory Counterpoint made (reads only)."""
    sqlite_files.check(path, APPLICATION_ID, REMEDY, _earlier_memory)


def _connect(path: Path | str) -> sqlite3.Connection:
    if str(path) != ":memory:":
        # Made complete and 0600 before anything opens it; never a file that is not ours.
        sqlite_files.ensure(Path(path), APPLICATION_ID, _CREATE, REMEDY, _earlier_memory)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30.0,
                           isolation_level=None)
    conn.execute("PRAGMA busy_timeout=30000")
    if str(path) != ":memory:":
        # Every process that uses memory opens this file at start-up. Switching a fresh
        # database to WAL needs an exclusive lock and SQLite answers "database is locked" at
        # once, without waiting on the busy timeout, while another process holds it.
        _retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
    _retry_locked(lambda: conn.executescript(_SCHEMA))
    return conn


class OutcomeStore:
    """The outcome table; the file is opened on first use, so the agents that never read or
    write memory (all but synthesis and memory) never touch it."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], scrub: Scrub) -> None:
        self._connect = connect
        self._scrub = scrub
        self._opened: sqlite3.Connection | None = None
        self._path: Path | None = None  # the file, when opened lazily (see `check`)
        self._lock = threading.Lock()  # one connection, used from worker threads

    @classmethod
    def open(cls, path: Path | str, *, scrub: Scrub) -> OutcomeStore:
        """Open now: a broken path fails here, not at the first request."""
        store = cls.lazy(path, scrub=scrub)
        store._opened = _connect(path)
        return store

    @classmethod
    def lazy(cls, path: Path | str, *, scrub: Scrub) -> OutcomeStore:
        store = cls(lambda: _connect(path), scrub)
        store._path = None if str(path) == ":memory:" else Path(path)
        return store

    def check(self) -> None:
        """At an agent's build: UnrecognisedFile if the file it would open is not ours."""
        if self._opened is None and self._path is not None:
            check(self._path)

    @classmethod
    def in_memory(cls, scrub: Scrub = str) -> OutcomeStore:
        """Kept in this process only (tests): nothing reaches a disk, so nothing is scrubbed
        unless asked."""
        return cls.open(":memory:", scrub=scrub)

    @property
    def opened(self) -> bool:
        return self._opened is not None

    @property
    def _conn(self) -> sqlite3.Connection:
        """The connection, opened on first use; callers hold `_lock`."""
        if self._opened is None:
            self._opened = self._connect()
        return self._opened

    def close(self) -> None:
        with self._lock:
            if self._opened is not None:
                self._opened.close()
                self._opened = None

    def record(self, result: Result, customer_id: str | None, service: str | None) -> None:
        scrub = self._scrub
        # Customer id and service stay as they are: they are what recall looks up.
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (result.request_id, scrub(result.source_id), result.kind, scrub(result.title),
                 scrub(summarize(result)), result.status, result.completed_at.isoformat(),
                 customer_id, service))

    def recall(self, *, customer_id: str | None, service: str | None, exclude: str,
               limit: int = RECALLED) -> list[PastOutcome]:
        """The latest outcomes for the customer, else the service; never `exclude` itself."""
        if customer_id is not None:
            where, value = "customer_id = ?", customer_id
        elif service is not None:
            where, value = "service = ?", service
        else:
            return []
        with self._lock:
            rows = self._conn.execute(
                f"SELECT request_id, source_id, kind, title, summary, status, completed_at, "
                f"customer_id, service FROM outcomes WHERE {where} AND request_id != ? "
                f"ORDER BY completed_at DESC LIMIT ?", (value, exclude, limit)).fetchall()
        return [PastOutcome(request_id=r[0], source_id=r[1], kind=r[2], title=r[3],
                            summary=r[4], status=r[5],
                            completed_at=datetime.fromisoformat(r[6]), customer_id=r[7],
                            service=r[8]) for r in rows]

    def count(self) -> int:
        with self._lock:
            (n,) = self._conn.execute("SELECT COUNT(*) FROM outcomes").fetchone()
        return int(n)


def history_lines(history: list[PastOutcome]) -> list[str]:
    """How a reply or runbook mentions earlier requests."""
    return [f"Previous request {h.request_id} on {h.completed_at.date().isoformat()} "
            f"({h.source_id}, {h.status}): {h.summary}" for h in history]


def reuse_lines(findings: Sequence[Finding]) -> list[str]:
    """How a reply or runbook says which findings came from an earlier investigation."""
    by_origin: dict[tuple[str, datetime], list[str]] = {}
    for f in findings:
        if f.reused_from is not None:
            origin = (f.reused_from.request_id, f.reused_from.at)
            by_origin.setdefault(origin, []).append(f"{f.skill}/{f.focus}")
    return [f"Reused, not investigated again: {', '.join(steps)} from request {request_id} "
            f"(investigated {at:%Y-%m-%d %H:%M} UTC)."
            for (request_id, at), steps in by_origin.items()]


def memory_lines(context: Mapping[str, Any]) -> list[str]:
    """The lines an offline composition adds for reused findings and earlier requests."""
    lines = reuse_lines(context.get("findings", ()))
    lines += history_lines(list(context.get("history", ())))
    return ["", *lines] if lines else []
