"""Opening the business database while another process has just published it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from counterpoint.agents.tools.business import APPLICATION_ID, BusinessStore, _build, _publish


def test_a_late_builder_keeps_the_database_another_process_published(tmp_path: Path) -> None:
    path = tmp_path / "business.db"
    late = _build(tmp_path, path.name)  # built while the path was still absent
    BusinessStore.open(path).close()  # meanwhile another process published one
    with sqlite3.connect(path) as db:  # ... and the executor recorded an effect in it
        db.execute("CREATE TABLE effects (id TEXT)")
        db.execute("INSERT INTO effects VALUES ('A-1')")
    inode = path.stat().st_ino

    _publish(late, path)

    assert path.stat().st_ino == inode
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT id FROM effects").fetchall() == [("A-1",)]
    assert not late.exists()


def test_a_stale_database_of_ours_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "business.db"
    with sqlite3.connect(path) as db:  # Counterpoint's mark, an older seed version
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
    fresh = _build(tmp_path, path.name)

    _publish(fresh, path)

    BusinessStore.open(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] > 1
