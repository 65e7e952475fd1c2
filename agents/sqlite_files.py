"""SQLite files Counterpoint keeps for itself, and never a file it did not create.

Each kind of file (the executor's ledger, memory's outcomes) carries its own mark in SQLite's
`application_id` header field. A file is made complete in a temporary file and linked into
place, so processes that start together never see a half-made one and never make two. A file
at the path without the kind's mark is left exactly as it is, and the process that wanted it
stops with `UnrecognisedFile`, naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from counterpoint.agents.private_files import private_dir


class UnrecognisedFile(Exception):
    """A file where Counterpoint would create its own, which Counterpoint did not create."""

    def __init__(self, path: Path, what: str, remedy: str) -> None:
        super().__init__(f"{path} {what}: Counterpoint does not replace or change a file it "
                         f"did not create. {remedy}")
        self.path = path


def mark(text: bytes) -> int:
    """An application_id from four ASCII letters (what `file(1)` and a hex dump show)."""
    return int.from_bytes(text, "big")


def read_mark(path: Path, remedy: str) -> int:
    """The application_id of the SQLite file at `path`, read without changing anything."""
    try:
        with contextlib.closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro",
                                                uri=True)) as db:
            return int(db.execute("PRAGMA application_id").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise UnrecognisedFile(path, f"cannot be read as an SQLite database ({exc})",
                               remedy) from exc


def check(path: Path, application_id: int, remedy: str,
          adoptable: Callable[[Path], bool] | None = None) -> None:
    """Raise UnrecognisedFile unless `path` is missing or carries `application_id`.

    `adoptable(path)` may recognise an unmarked file as one an earlier Counterpoint made (it
    marked nothing then); `ensure` marks such a file when it opens it. Reads only headers."""
    if not path.exists():
        return
    found = read_mark(path, remedy)
    if found == application_id:
        return
    if found == 0 and adoptable is not None and adoptable(path):
        return
    raise UnrecognisedFile(path, f"is an SQLite database without Counterpoint's mark "
                                 f"(application_id {found})", remedy)


def ensure(path: Path, application_id: int, schema: str, remedy: str,
           adoptable: Callable[[Path], bool] | None = None) -> None:
    """Make the file at `path` (with `schema`, which sets the mark) unless one is there, then
    check it is ours; an adoptable earlier file gets the mark now."""
    if not path.exists():
        _create(path, schema)
    check(path, application_id, remedy, adoptable)
    if read_mark(path, remedy) != application_id:  # adoptable: ours from an earlier version
        with contextlib.closing(sqlite3.connect(path, timeout=30.0)) as db:
            db.execute(f"PRAGMA application_id = {int(application_id)}")
            db.commit()


def _create(path: Path, schema: str) -> None:
    """Create-if-absent, atomically: the complete file is linked into place."""
    private_dir(path.parent)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            db.executescript(schema)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first
        except OSError:  # a filesystem without hard links: exclusive create, then the bytes
            with contextlib.suppress(FileExistsError):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    out.write(tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction on `db`, a connection in autocommit mode (isolation_level=None):
    BEGIN IMMEDIATE takes the write lock first, so two writers serialise instead of both
    reading "not done yet"; committed at the end, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
