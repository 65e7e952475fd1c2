"""The executor's once-only record: every decision it saw and each action's one outcome.

It lives in Counterpoint's own SQLite file, `$COUNTERPOINT_HOME/actions.db`, apart from any
business system: the actions themselves are side-effecting tools of a tool source (the demo
business server's `refund`, ...; agents/executor.py calls them). The ledger holds no business
schema.

`decide` records a decision (the first one recorded for an action id wins) and answers with
the outcome already recorded for the action, if any; `record` keeps an outcome, unless another
executor recorded one first, in which case that one is returned. So an action id has one
recorded outcome however often its decision is delivered or published, in however many
executor processes. Between the two the executor calls the tool with the action id as the
idempotency key, so a call repeated after a crash, or by two executors at once, has one
effect at the business system too.

Counterpoint never changes a file it did not create (agents/sqlite_files.py): the file carries
the ledger's mark (SQLite's `application_id`), is made complete in a temporary file and linked
into place (so two executors starting together never see a half-made one), and a file at the
path without the mark stops the executor with `UnrecognisedFile`, naming the file, and is left
as it is.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from counterpoint.agents import sqlite_files
from counterpoint.bus.errors import TransientError
from counterpoint.schemas.approvals import ActionExecuted, ApprovalDecision, Outcome

FILE_NAME: Final = "actions.db"
# "CPNT" in SQLite's application_id header field: a file Counterpoint created.
APPLICATION_ID: Final = sqlite_files.mark(b"CPNT")
# The ledger's own schema version (user_version), for a later migration to recognise.
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = f"""
CREATE TABLE action_decisions (
    approval_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, decision TEXT NOT NULL,
    decided_by TEXT NOT NULL, via TEXT NOT NULL, reason TEXT NOT NULL, decided_at TEXT NOT NULL);
CREATE TABLE executed_actions (
    action_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL, decided_by TEXT NOT NULL,
    executed_at TEXT NOT NULL, executed_by TEXT NOT NULL);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""


REMEDY: Final = ("Move it elsewhere (or set COUNTERPOINT_HOME to another folder) and start "
                  "again: the executor's record is then created fresh.")


@dataclass(frozen=True)
class FirstDecision:
    """The decision that counts for an action: the first one recorded."""

    decision: str
    decided_by: str
    reason: str


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check(path: Path) -> None:
    """Raise UnrecognisedFile when a file at `path` is not a ledger Counterpoint made; reads
    only the header, makes nothing (for start-up, before anything could write there)."""
    sqlite_files.check(path, APPLICATION_ID, REMEDY)


class ActionLedger:
    """Decisions and outcomes by action id, in the executor's own file."""

    def __init__(self, path: Path, executed_by: str = "executor") -> None:
        self.path = path
        self.executed_by = executed_by
        self._lock = threading.Lock()
        check(path)  # a file that is not ours stops the executor when it is built
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:  # the file is made now, or by another executor since this was built
            sqlite_files.ensure(self.path, APPLICATION_ID, _SCHEMA, REMEDY)
            # One connection for the process's life, used under the lock from worker threads.
            # Write-ahead logging: a commit appends to the log and syncs it once, where the
            # rollback journal created, synced and deleted a file (1.0 -> 0.2 ms of CPU and
            # 8 -> 1.2 ms per transaction here), still durable at every commit. Executors
            # sharing the file must share a host (WAL needs shared memory): they do, as they
            # share a COUNTERPOINT_HOME.
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                 check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
            except BaseException:
                db.close()
                raise
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE: two executors settling one action serialise instead of both
        # reading "nothing recorded yet".
        with self._lock:
            try:
                with sqlite_files.immediate(self._connection()) as db:
                    yield db
            except sqlite3.OperationalError as exc:  # locked for longer than the timeout
                raise TransientError(f"the executor's ledger is busy: {exc}") from exc

    def decide(self, d: ApprovalDecision) -> tuple[FirstDecision, ActionExecuted | None]:
        """Record `d` (the first decision recorded for its action wins); the winning decision,
        and the action's outcome when one is recorded already."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO action_decisions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (d.approval_id, d.request_id, d.decision, d.decided_by, d.via, d.reason,
                        _ts(d.decided_at)))
            first = FirstDecision(*db.execute(
                "SELECT decision, decided_by, reason FROM action_decisions "
                "WHERE approval_id = ?", (d.approval_id,)).fetchone())
            return first, self._recorded(db, d)

    def record(self, d: ApprovalDecision, outcome: Outcome, detail: str,
               decided_by: str) -> ActionExecuted:
        """Keep the action's outcome; if another executor kept one first, that one."""
        at = datetime.now(UTC).replace(microsecond=0)
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO executed_actions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (d.approval_id, d.request_id, d.action.action, d.action.target, outcome,
                        detail, decided_by, _ts(at), self.executed_by))
            recorded = self._recorded(db, d)
            assert recorded is not None
            return recorded

    def _recorded(self, db: sqlite3.Connection, d: ApprovalDecision) -> ActionExecuted | None:
        row = db.execute("SELECT outcome, detail, decided_by, executed_at, executed_by "
                         "FROM executed_actions WHERE action_id = ?", (d.approval_id,)).fetchone()
        if row is None:
            return None
        outcome, detail, decided_by, executed_at, executed_by = row
        return ActionExecuted.model_validate({
            "action_id": d.approval_id, "request_id": d.request_id, "source_id": d.source_id,
            "action": d.action, "outcome": outcome, "detail": detail, "decided_by": decided_by,
            "executed_at": datetime.fromisoformat(executed_at), "executed_by": executed_by})

    def outcomes(self) -> dict[str, tuple[str, str]]:
        """action id -> (outcome, detail): what has run, for tests and inspection."""
        if not self.path.exists():
            return {}
        with self._transaction() as db:
            rows = db.execute("SELECT action_id, outcome, detail FROM executed_actions")
            return {aid: (outcome, detail) for aid, outcome, detail in rows.fetchall()}
