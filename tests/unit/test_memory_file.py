"""memory.db is Counterpoint's own file: made marked and private, never a file it did not make.

Real SQLite files on disk. A file at the path that Counterpoint did not create is left byte for
byte as it was; one an earlier Counterpoint made (unmarked, only the outcome table) is kept,
with its rows, and marked.
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from counterpoint.agents.outcomes import APPLICATION_ID, OutcomeStore
from counterpoint.agents.sqlite_files import UnrecognisedFile

EARLIER_SCHEMA = """
CREATE TABLE outcomes (request_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, kind TEXT NOT NULL,
    title TEXT NOT NULL, summary TEXT NOT NULL, status TEXT NOT NULL, completed_at TEXT NOT NULL,
    customer_id TEXT, service TEXT);
CREATE INDEX outcomes_customer ON outcomes (customer_id, completed_at);
CREATE INDEX outcomes_service ON outcomes (service, completed_at);
INSERT INTO outcomes VALUES ('r-1', 'T-1', 'ticket', 'Invoice wrong', 'billing: refunded',
    'complete', '2026-11-30T10:00:00+00:00', 'C-42', NULL);
"""


def _mark(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA application_id").fetchone()[0])


def test_a_new_memory_is_marked_and_private(tmp_path: Path) -> None:
    path = tmp_path / "home" / "memory.db"
    store = OutcomeStore.lazy(path, scrub=str)
    store.check()  # nothing there yet: fine, and nothing made
    assert not path.exists()
    assert store.recall(customer_id="C-1", service=None, exclude="r") == []
    store.close()
    assert _mark(path) == APPLICATION_ID
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    OutcomeStore.lazy(path, scrub=str).check()  # ours: accepted


@pytest.mark.parametrize("kind", ["sqlite", "text"])
def test_a_file_counterpoint_did_not_make_is_refused_and_left_alone(tmp_path: Path,
                                                                     kind: str) -> None:
    path = tmp_path / "memory.db"
    if kind == "sqlite":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)")
            db.execute("INSERT INTO orders VALUES ('o-1')")
    else:
        path.write_text("my notes, not a database\n" * 200)
    before = path.read_bytes()
    store = OutcomeStore.lazy(path, scrub=str)
    with pytest.raises(UnrecognisedFile, match="COUNTERPOINT_MEMORY_DB") as info:
        store.check()
    assert str(path) in str(info.value)
    with pytest.raises(UnrecognisedFile):
        store.recall(customer_id="C-1", service=None, exclude="r")  # first use: same refusal
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.db"]  # no -wal, no temp


def test_a_memory_an_earlier_counterpoint_made_keeps_its_rows_and_gets_the_mark(
        tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    with sqlite3.connect(path) as db:
        db.executescript(EARLIER_SCHEMA)
    assert _mark(path) == 0
    store = OutcomeStore.lazy(path, scrub=str)
    store.check()
    (past,) = store.recall(customer_id="C-42", service=None, exclude="r-2")
    store.close()
    assert past.request_id == "r-1"
    assert _mark(path) == APPLICATION_ID
